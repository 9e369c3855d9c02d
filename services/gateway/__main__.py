"""``python -m services.gateway``: the HTTP gateway as its own process (distributed mode).

``python -m services.gateway recover-admin [--name N]``: the operators' break-glass command
(services/gateway/recover.py) — a new root admin, when none can log in.
"""

import asyncio
import sys

from shared.runtime import install_uvloop, run_service

if __name__ == "__main__":
    if sys.argv[1:2] == ["recover-admin"]:
        from services.gateway.recover import main

        main(sys.argv[2:])
    else:
        from services.gateway.app import SPEC

        install_uvloop()
        asyncio.run(run_service(SPEC))
