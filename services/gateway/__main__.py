"""``python -m services.gateway``: the HTTP gateway as its own process (distributed mode)."""

import asyncio

from services.gateway.app import SPEC
from shared.runtime import install_uvloop, run_service

if __name__ == "__main__":
    install_uvloop()
    asyncio.run(run_service(SPEC))
