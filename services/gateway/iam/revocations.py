"""Which tokens are void, on this replica: revoked ones, deleted identities', older generations'.

Kept in memory (a lookup per request); loaded from the database at start,
changed at once by the replica that made the change (through the methods
below) and on every other replica by the ``token.revoked`` event; reloaded
every so often in case a replica missed an event while disconnected.
"""

from __future__ import annotations

from services.gateway.iam.domain import Principal
from services.gateway.iam.repository import IamRepository
from shared.contracts.events import Event
from shared.errors import TokenRevoked


class Revocations:
    def __init__(self, repo: IamRepository) -> None:
        self.repo = repo
        #: (tenant, jti) of revoked tokens: a revocation applies to tokens of its own tenant only
        self._tokens: set[tuple[str, str]] = set()
        self._deleted: set[str] = set()
        #: identity -> the lowest token generation still valid (absent: every generation is)
        self._floors: dict[str, int] = {}

    def check(self, who: Principal) -> None:
        """``token_revoked`` unless ``who``'s token is still good."""
        if ((who.tenant_id, who.token_id) in self._tokens or who.identity_id in self._deleted
                or (who.session_id is not None and (who.tenant_id, who.session_id) in self._tokens)
                or who.generation < self._floors.get(who.identity_id, 0)):
            raise TokenRevoked("token has been revoked")

    def token_revoked(self, tenant_id: str, jti: str) -> None:
        self._tokens.add((tenant_id, jti))

    def identity_deleted(self, identity_id: str) -> None:
        self._deleted.add(identity_id)

    def tokens_voided(self, identity_id: str, generation: int) -> None:
        """Tokens of ``identity_id`` older than ``generation`` are void from now on."""
        if generation > self._floors.get(identity_id, 0):
            self._floors[identity_id] = generation

    async def reload(self) -> None:
        tokens, deleted, floors = await self.repo.revocations()
        self._tokens, self._deleted = tokens, deleted
        for identity_id, generation in floors.items():  # an event newer than the read keeps its floor
            self.tokens_voided(identity_id, generation)

    def on_event(self, event: Event) -> None:
        """``token.revoked``: a jti, a voided generation, or a deleted identity."""
        data = event.data
        if (jti := data.get("jti")) and (tenant := data.get("tenant_id") or event.tenant_id):
            self.token_revoked(str(tenant), str(jti))
        identity, generation = data.get("identity_id"), data.get("generation")
        if identity and isinstance(generation, int):
            self.tokens_voided(str(identity), generation)
        elif identity:
            self.identity_deleted(str(identity))
