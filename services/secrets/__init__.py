"""The ``secrets`` service: versioned secrets with envelope encryption."""
