"""``python -m services.admin backup | restore``: services/admin/cli.py."""

import sys

from services.admin.cli import main

if __name__ == "__main__":
    sys.exit(main())
