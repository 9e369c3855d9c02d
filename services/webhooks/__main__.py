"""``python -m services.webhooks``: the webhooks service as its own process (distributed mode)."""

import asyncio

from services.webhooks.app import SPEC
from shared.runtime import install_uvloop, run_service

if __name__ == "__main__":
    install_uvloop()
    asyncio.run(run_service(SPEC))
