"""``python -m services.gateway``: the HTTP gateway as its own process (distributed mode)."""

import asyncio

from services.platform import Platform
from shared.logging import configure
from shared.runtime import distributed_settings, install_uvloop, wait_for_signal


async def main() -> None:
    settings = distributed_settings()
    configure(settings.log_level, settings.log_format)
    assert settings.database_url is not None
    platform = Platform(
        settings, settings.database_url.get_secret_value(), services=("gateway",), name="coffer-gateway"
    )
    try:
        await platform.start()
        print(f"coffer gateway: listening on {platform.url} (Ctrl-C to stop)", flush=True)
        await wait_for_signal()
    finally:
        await platform.close()


if __name__ == "__main__":
    install_uvloop()
    asyncio.run(main())
