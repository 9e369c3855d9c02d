"""The ``lease`` service: dynamic-credential engines and leases."""
