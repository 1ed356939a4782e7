"""OAuth 2.0 clients: registration, the client credentials grant, introspection (S43, S44).

A client authenticates with its id (a UUID) and a secret `ks_cs_<secret><checksum>`
(see `opaque_secrets`), stored as an HMAC and compared in constant time; an unknown
id costs the same comparison. Client records are read through a `TieredCache`, so a
grant is one Redis round trip (the rate limit) plus a signature, and a deleted
client's tokens stop working on every worker within the cache bound.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass
from typing import Any
from uuid import UUID

from keystile.errors import (
    DependencyUnavailable,
    InvalidApiKey,
    InvalidClient,
    InvalidInput,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    LimitStatus,
    NotFound,
    RateLimited,
)
from keystile.rates import Rate
from keystile.repositories.audit import AuditLog
from keystile.repositories.clients import ClientRecord, PostgresClientRepository
from keystile.secret_keys import note_fallback_used
from keystile.services.access_tokens import AccessTokenCodec
from keystile.services.api_keys import ApiKeyService, is_api_key
from keystile.services.opaque_secrets import Hmac, has_valid_checksum, random_base62, with_checksum
from keystile.services.paging import decode_cursor, split_page
from keystile.services.rate_limits import CounterKeys
from keystile.services.revocation import TokenEpochs
from keystile.services.types import ClientInfo, Principal
from keystile.stores.cache import TieredCache
from keystile.stores.rate_limits import CounterStore, GcraResult

__all__ = [
    "CLIENT_SECRET_PREFIX",
    "ClientCredentials",
    "ClientPage",
    "ClientService",
    "ClientToken",
    "NewClient",
]

CLIENT_SECRET_PREFIX = "ks_cs_"  # noqa: S105 (a prefix, not a secret)
_SECRET = re.compile(rf"{CLIENT_SECRET_PREFIX}[0-9A-Za-z]{{46}}")
_SECRET_LENGTH = 40  # ~238 bits
_AUDIENCE = re.compile(r"[\x21-\x7e]{1,256}")

ClientCache = TieredCache[ClientRecord]


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What a client presented: from HTTP Basic (`basic`) or from the form body."""

    client_id: str
    secret: str
    basic: bool


@dataclass(frozen=True, slots=True)
class ClientPage:
    clients: list[ClientRecord]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class NewClient:
    """A client just registered: `secret` is shown this once and never stored."""

    record: ClientRecord
    secret: str


@dataclass(frozen=True, slots=True)
class ClientToken:
    """A client credentials grant's answer (RFC 6749 4.4.3; no refresh token)."""

    access_token: str
    expires_in: int
    scope: str
    limit: LimitStatus | None


@dataclass(frozen=True, slots=True)
class ClientService:
    """Register clients, grant them tokens, introspect tokens for them."""

    repository: PostgresClientRepository
    cache: ClientCache
    codec: AccessTokenCodec
    epochs: TokenEpochs
    api_keys: ApiKeyService
    audit: AuditLog
    counters: CounterStore
    counter_keys: CounterKeys
    _: KW_ONLY
    digests: Hmac
    scopes: frozenset[str]
    audience: str
    ttl: int
    per_ip: Rate | None
    per_client: Rate | None

    # --- registration (CLI and admin API) --------------------------------------------

    async def create(
        self,
        name: str,
        scopes: Iterable[str],
        audience: str | None = None,
        *,
        created_by: UUID | None = None,
        client: ClientInfo | None = None,
    ) -> NewClient:
        """Register a client allowed `scopes` (among the configured ones) and `audience`."""
        requested = frozenset(scopes)
        if not requested:
            raise InvalidInput("Give the client at least one scope.")
        if not requested <= self.scopes:
            unknown = ", ".join(sorted(requested - self.scopes))
            raise InvalidInput(f"Not a configured scope (token_scopes): {unknown}.")
        if audience is not None and not _AUDIENCE.fullmatch(audience):
            raise InvalidInput("audience: up to 256 printable ASCII characters, no spaces.")
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise InvalidInput("name: 1 to 100 characters.")
        client_id = uuid.uuid4()
        secret = with_checksum(CLIENT_SECRET_PREFIX + random_base62(_SECRET_LENGTH))
        record = await self.repository.insert_client(
            name,
            self.digests.digest(f"{client_id}.{secret}"),
            sorted(requested),
            audience,
            created_by,
            client_id,
            secret_key_id=self.digests.key_id,
        )
        await self.audit.record(
            "client_created",
            user_id=created_by,
            ip=client.ip if client else "",
            client_id=str(client_id),
            scopes=sorted(requested),
            via="admin_api" if created_by else "cli",
        )
        return NewClient(record, secret)

    async def list_clients(self, cursor: str | None, limit: int) -> ClientPage:
        """Return a page of clients, oldest first, and the cursor of the next page (if any)."""
        after = None if not cursor else decode_cursor(cursor)
        clients = await self.repository.select_clients_page(after, limit + 1)
        return ClientPage(*split_page(clients, limit))

    async def count_by_secret_key(self) -> dict[str | None, int]:
        """Return how many clients' secrets are under each secret key id (None: not recorded)."""
        return await self.repository.count_by_secret_key()

    async def delete(
        self, client_id: UUID, *, deleted_by: UUID | None = None, client: ClientInfo | None = None
    ) -> None:
        """Delete a client; its tokens are refused everywhere within the cache bound."""
        if not await self.repository.delete_client(client_id):
            raise NotFound("No such client.")
        await self.cache.invalidate(str(client_id))
        await self.audit.record(
            "client_deleted",
            user_id=deleted_by,
            ip=client.ip if client else "",
            client_id=str(client_id),
            via="admin_api" if deleted_by else "cli",
        )

    # --- the token endpoint -------------------------------------------------------

    async def authenticate(self, credentials: ClientCredentials) -> ClientRecord:
        """Return the client whose id and secret these are; raise `InvalidClient` otherwise."""
        basic = credentials.basic
        try:
            client_id = UUID(credentials.client_id)
        except ValueError:
            raise InvalidClient(basic=basic) from None
        secret = credentials.secret
        if not _SECRET.fullmatch(secret) or not has_valid_checksum(secret):
            raise InvalidClient(basic=basic)
        record = await self._client(client_id)
        expected = self.digests.dummy if record is None else record.secret_hmac
        under = self.digests.match(f"{client_id}.{secret}", expected)
        if under is None or record is None:
            raise InvalidClient(basic=basic)
        if under:
            await self._redigest(record, secret)
        return record

    async def _redigest(self, record: ClientRecord, secret: str) -> None:
        """Store the HMAC of a secret that matched under a previous secret key under the
        current one, so it no longer needs the fallback. Bookkeeping: PostgreSQL being
        down leaves it for a later grant; the UPDATE only replaces the digest it read.
        """
        note_fallback_used("client_secret")
        digest = self.digests.digest(f"{record.id}.{secret}")
        try:
            await self.repository.replace_digest(
                record.id, record.secret_hmac, digest, self.digests.key_id
            )
        except DependencyUnavailable:
            return
        await self.cache.invalidate(str(record.id))

    async def grant(
        self,
        credentials: ClientCredentials,
        scope: str | None,
        audience: str | None,
        client: ClientInfo,
    ) -> ClientToken:
        """The client credentials grant (RFC 6749 4.4): a JWT for the client, no refresh token.

        `scope` (space-separated) defaults to every scope the client may have;
        `audience` defaults to keystile's own; the client may name its registered one.
        """
        limit = await self._charge(credentials.client_id, client)
        record = await self.authenticate(credentials)
        allowed = frozenset(record.scopes) & self.scopes
        if scope is None or not scope.strip():
            granted = allowed
        else:
            granted = frozenset(scope.split())
            if not granted <= allowed:
                raise InvalidScope("The client may not have the requested scope.")
        target = audience or self.audience
        if target not in {self.audience, record.audience}:
            raise InvalidTarget()
        token = self.codec.issue_client(record.id, granted, audience=target, ttl=self.ttl)
        return ClientToken(token, self.ttl, " ".join(sorted(granted)), limit)

    async def introspect(self, credentials: ClientCredentials, token: str) -> dict[str, Any]:
        """RFC 7662: describe a token to an authenticated client; `{"active": false}` if dead.

        Knows access tokens (of users and of clients, for any audience keystile issued
        them for) and API keys. A failure never says why.
        """
        await self.authenticate(credentials)
        try:
            if is_api_key(token):
                return await self._describe_api_key(token)
            return await self._describe_access_token(token)
        except (InvalidToken, InvalidApiKey):
            return {"active": False}

    async def _describe_api_key(self, token: str) -> dict[str, Any]:
        principal = await self.api_keys.authenticate(token)
        return {
            "active": True,
            "token_type": "api_key",
            "sub": str(principal.user_id),
            "scope": " ".join(sorted(principal.scopes)),
        }

    async def _describe_access_token(self, token: str) -> dict[str, Any]:
        claims = self.codec.verify(token, any_audience=True)
        answer: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer",
            "sub": str(claims.user_id),
            "aud": claims.audience,
            "scope": " ".join(sorted(claims.scopes)),
            "exp": int(claims.expires_at),
            "iat": int(claims.issued_at),
        }
        if claims.client_id is not None:
            record = await self._client(claims.client_id)
            if record is None or claims.audience not in {self.audience, record.audience}:
                return {"active": False}
            answer["client_id"] = str(claims.client_id)
            return answer
        holder = await self.epochs.get(claims.user_id)
        if claims.audience != self.audience or holder is None or holder.epoch != claims.epoch:
            return {"active": False}
        if claims.roles:
            answer["roles"] = sorted(claims.roles)
        return answer

    async def ensure_live(self, principal: Principal) -> Principal:
        """Refuse a client-credentials token whose client was deleted (`InvalidToken`)."""
        assert principal.client_id is not None
        if await self._client(principal.client_id) is None:
            raise InvalidToken()
        return principal

    async def _client(self, client_id: UUID) -> ClientRecord | None:
        return await self.cache.get(
            str(client_id), lambda: self.repository.select_client(client_id)
        )

    async def _charge(self, client_id: str, client: ClientInfo) -> LimitStatus | None:
        """Charge one grant per address and per client id (claimed: failures count too)."""
        keys: list[str] = []
        rates: list[Rate] = []
        for rate, scope, part in (
            (self.per_ip, "ip", client.ip),
            (self.per_client, "client", client_id[:64]),
        ):
            if rate is not None:
                keys.append(self.counter_keys.key(f"rl:client_credentials:{rate}:{scope}", part))
                rates.append(rate)
        if not keys:
            return None
        results = await self.counters.gcra(keys, rates)
        refused = [result for result in results if result.retry_after > 0]
        if refused:
            worst = max(refused, key=lambda result: result.retry_after)
            raise RateLimited(math.ceil(worst.retry_after), status=_status(worst))
        return _status(min(results, key=lambda result: result.remaining))


def _status(result: GcraResult) -> LimitStatus:
    return LimitStatus(
        limit=result.rate.count,
        remaining=max(0, result.remaining),
        reset_after=math.ceil(result.reset_after),
        period=math.ceil(result.rate.period),
    )
