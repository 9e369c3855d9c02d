"""A webhook URL through the shared outbound guard (``shared.outbound``), refusals as ``webhook_url_invalid``.

Checked when a webhook is created or changed and again before every
delivery; the dispatcher's connector pins each connection to the addresses
checked at connect time (``shared.outbound.guarded_connector``).
"""

from __future__ import annotations

from shared.errors import WebhookUrlInvalid
from shared.outbound import Lookup, OutboundPolicy, OutboundRefused, check, system_lookup


async def check_url(raw: str, policy: OutboundPolicy, lookup: Lookup = system_lookup) -> list[str]:
    """The addresses ``raw`` may be delivered to; ``webhook_url_invalid`` otherwise."""
    try:
        return await check(raw, policy, lookup)
    except OutboundRefused as refused:
        # a URL with credentials in it is not echoed back (nor anywhere else)
        shown = "[redacted: has credentials]" if "@" in str(raw) else str(raw)[:200]
        raise WebhookUrlInvalid(f"webhook URL refused: {refused.reason}",
                                details={"url": shown, "reason": refused.reason}) from None
