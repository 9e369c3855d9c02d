"""System routes and storage: health, metrics, initialisation, KEK rotation, maintenance."""
