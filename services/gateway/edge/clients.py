"""Who is calling from where: the client address of a request (api.md §4, "Client IP")."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from services.gateway.iam.policy import IpAddress, IpNetwork, client_address

_CLIENT_IP: web.RequestKey[IpAddress | None] = web.RequestKey("client_ip", object)


class ClientAddresses:
    """The socket peer; ``X-Forwarded-For`` only when that peer is one of our trusted proxies."""

    def __init__(self, trusted_proxies: tuple[str, ...]) -> None:
        self.trusted: tuple[IpNetwork, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in trusted_proxies)

    def of(self, request: web.Request) -> IpAddress | None:
        """The client address of ``request`` (worked out once per request)."""
        if _CLIENT_IP in request:
            return request[_CLIENT_IP]
        request[_CLIENT_IP] = ip = self._client_ip(request)
        return ip

    def _client_ip(self, request: web.Request) -> IpAddress | None:
        peer = client_address(request.remote)
        xff = request.headers.get("X-Forwarded-For")
        if peer is None or not xff or not self._trusted(peer):
            return peer
        hops = [client_address(h.strip()) for h in xff.split(",")][-20:]
        for hop in reversed(hops):  # the nearest address that is not one of our proxies
            if hop is None:
                return peer
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _trusted(self, ip: IpAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.trusted)
