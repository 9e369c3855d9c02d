"""``python -m services.provision`` (``services.provision.cli``)."""

from services.provision.cli import main

if __name__ == "__main__":
    main()
