"""``python -m services.pki``: the pki service as its own process (distributed mode)."""

import asyncio

from services.pki.app import SPEC
from shared.runtime import install_uvloop, run_service

if __name__ == "__main__":
    install_uvloop()
    asyncio.run(run_service(SPEC))
