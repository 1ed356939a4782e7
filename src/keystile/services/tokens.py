"""API tokens: the password grant, refresh rotation, revocation, bearer authentication.

Refresh tokens are opaque (256 random bits, S15) and only their SHA-256 is stored
(S18); each also names its account under a tag only the server can make, so refresh
is charged per account before the token is spent (services/refresh_token_format.py,
S27). A successor is not random but HMAC(secret, parent): it is unguessable
without the secret, yet the server can re-derive it, so a reuse of the parent
inside the grace window can answer with the successor already issued (the
multi-tab race) without keeping any token in the clear, and a second successor
of one parent cannot exist at all (S16).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

from keystile import metrics
from keystile.errors import (
    InvalidRefreshToken,
    InvalidScope,
    InvalidToken,
    LimitStatus,
    TokenRevoked,
)
from keystile.rates import Action
from keystile.repositories.audit import AuditEntry, AuditLog, LoginRecord
from keystile.repositories.refresh_tokens import RefreshTokenRepository
from keystile.repositories.users import User
from keystile.secret_keys import SecretKeys, note_fallback_used
from keystile.services.access_tokens import AccessClaims, AccessTokenCodec
from keystile.services.keys import KeyRing
from keystile.services.login_gate import LoginAdmission
from keystile.services.refresh_token_format import RefreshTokenFormat
from keystile.services.revocation import TokenEpochs
from keystile.services.types import Authenticated, ClientInfo, Principal
from keystile.stores.cache import LocalCache

__all__ = [
    "AccessGrant",
    "PasswordAuthenticator",
    "TokenPair",
    "TokenService",
    "hash_refresh_token",
]

_log = logging.getLogger(__name__)


class SecondFactorGate(Protocol):
    """Raises `MfaRequired` for a user with a second factor (services/mfa.py)."""

    async def require(
        self, user: User, client: ClientInfo, *, mode: str, scope: str | None = None
    ) -> None: ...


class PasswordAuthenticator(Protocol):
    """The credential check of the password grant (AuthService.authenticate)."""

    async def authenticate(
        self,
        email: str,
        password: str,
        client: ClientInfo,
        *,
        action: Action = Action.LOGIN,
        admission: LoginAdmission | None = None,
    ) -> Authenticated: ...


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a token endpoint answers."""

    access_token: str
    refresh_token: str
    expires_in: int
    scope: str
    limits: LimitStatus | None = None  # the tightest rate limit of a password grant


@dataclass(frozen=True, slots=True)
class AccessGrant:
    """A new access token of an existing family (re-authentication): no refresh token."""

    access_token: str
    expires_in: int
    scope: str
    auth_time: datetime


def hash_refresh_token(token: str) -> bytes:
    """Return what is stored for a refresh token: its SHA-256 (S18)."""
    return hashlib.sha256(token.encode()).digest()


class TokenService:
    """Issue, rotate, revoke and check tokens."""

    def __init__(
        self,
        *,
        codec: AccessTokenCodec,
        ring: KeyRing,
        refresh_tokens: RefreshTokenRepository,
        epochs: TokenEpochs,
        authenticator: PasswordAuthenticator,
        audit: AuditLog,
        keys: SecretKeys,
        scopes: Iterable[str],
        refresh_idle: timedelta,
        refresh_absolute: timedelta,
        reuse_grace: timedelta,
        verified_cache_size: int,
        second_factor: SecondFactorGate | None = None,
    ) -> None:
        self._second_factor = second_factor
        self._codec = codec
        self._ring = ring
        self._refresh_tokens = refresh_tokens
        self._epochs = epochs
        self._authenticator = authenticator
        self._audit = audit
        self._format = RefreshTokenFormat(keys)
        self._scopes = frozenset(scopes)
        self._refresh_idle = refresh_idle
        self._refresh_absolute = refresh_absolute
        self._reuse_grace = reuse_grace
        # Tokens seen before skip the signature check until their exp (hot path 3).
        self._verified: LocalCache[bytes, AccessClaims] = LocalCache(
            ttl=codec.ttl, max_entries=verified_cache_size
        )
        self._verified_version = ring.version

    async def grant_password(
        self,
        email: str,
        password: str,
        scope: str | None,
        client: ClientInfo,
        *,
        admission: LoginAdmission | None = None,
    ) -> TokenPair:
        """Check the credentials and start a token family (one login).

        `admission`: the login's gate and hash admission, if already decided
        (`AuthService.admit_login`).
        """
        scopes = self._requested_scopes(scope)
        found = await self._authenticator.authenticate(
            email, password, client, action=Action.TOKEN, admission=admission
        )
        if self._second_factor is not None:
            # A user with a factor gets an mfa_token, no tokens (S42).
            await self._second_factor.require(found.user, client, mode="tokens", scope=scope)
        pair = await self.start_family(found.user, scopes, client, amr=("pwd",))
        return dataclasses.replace(pair, limits=found.limits)

    async def start_family(
        self,
        user: User,
        scopes: Iterable[str],
        client: ClientInfo,
        *,
        amr: tuple[str, ...],
        scope_text: str | None = None,
        proved: AuditEntry | None = None,
    ) -> TokenPair:
        """Start a token family for a user who just authenticated as `amr` says.

        `proved`: the event of the second step that completed the login (`SecondStep`),
        committed with the family and its `login` event.
        """
        refresh_token = self._format.first(user.id)
        scope_text = " ".join(sorted(scopes)) if scope_text is None else scope_text
        via = {"via": "token"} if amr == ("pwd",) else {"via": "token", "amr": list(amr)}
        login = AuditEntry("login", user.id, client.ip, client.user_agent, via)
        # Family, first token and audit events: one statement, one round trip.
        family_id = await self._refresh_tokens.insert_family(
            user.id,
            scope_text,
            hash_refresh_token(refresh_token),
            idle=self._refresh_idle,
            absolute=self._refresh_absolute,
            login=LoginRecord(amr, (login,) if proved is None else (proved, login)),
        )
        return self._pair(
            user.id,
            user.token_epoch,
            scope_text,
            refresh_token,
            user.roles,
            time.time(),
            user.email_verified_at is not None,
            amr,
            family_id,
        )

    def requested_scopes(self, scope: str | None) -> frozenset[str]:
        """Return the scopes a password grant asking for `scope` gets; `InvalidScope` if none."""
        return self._requested_scopes(scope)

    async def refresh(self, refresh_token: str, client: ClientInfo) -> TokenPair:
        """Rotate a refresh token: it becomes used, its successor comes back (S16).

        Reused inside the grace window, the same successor comes back again; reused
        after it, the whole family is revoked and every later use is refused.
        """
        selector = self._format.selector(refresh_token)
        account = None if selector is None else selector.account
        if account is None and not self._format.is_older_form(refresh_token):
            raise InvalidRefreshToken()  # not a token we could have issued: no lookup
        if selector is not None and selector.previous_key:
            note_fallback_used("refresh_token")
        token_hash = hash_refresh_token(refresh_token)
        successor = self._format.successor(refresh_token, account)
        successor_hash = hash_refresh_token(successor)
        rotated = await self._refresh_tokens.rotate(
            token_hash, successor_hash, idle=self._refresh_idle
        )
        if rotated is not None:
            return self._pair(
                rotated.user_id,
                rotated.token_epoch,
                rotated.scope,
                successor,
                rotated.roles,
                rotated.auth_time.timestamp(),
                rotated.email_verified,
                rotated.amr,
                rotated.family_id,
            )

        state = await self._refresh_tokens.select_token_state(token_hash, grace=self._reuse_grace)
        if state is None or not state.live or not state.used:
            raise InvalidRefreshToken()
        if state.used_within_grace:
            # The successor as made under the current secret key, then as a worker still on
            # a previous key (a rolling restart) would have made it.
            for candidate in self._format.successors(refresh_token, account):
                if not await self._refresh_tokens.has_live_child(
                    token_hash, hash_refresh_token(candidate)
                ):
                    continue
                return self._pair(
                    state.user_id,
                    state.token_epoch,
                    state.scope,
                    candidate,
                    state.roles,
                    state.auth_time.timestamp(),
                    state.email_verified,
                    state.amr,
                    state.family_id,
                )
        # Used twice, seconds apart: one of the two holders stole it (RFC 9700 4.14.2).
        metrics.REFRESH_REUSE_DETECTED.inc()
        await self._audit.record(
            "refresh_reuse_detected",
            user_id=state.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            family_id=str(state.family_id),
        )
        if await self._refresh_tokens.revoke_family(state.family_id, "reuse"):
            await self._audit.record(
                "token_family_revoked",
                user_id=state.user_id,
                ip=client.ip,
                reason="reuse",
                family_id=str(state.family_id),
            )
        raise InvalidRefreshToken()

    def account_of(self, refresh_token: str) -> UUID | None:
        """Return the user `refresh_token` names, before it is spent (its refresh allowance).

        None for a token issued before tokens named their account, or a forged one: those
        are charged per client address only.
        """
        return self._format.account_of(refresh_token)

    async def revoke(self, refresh_token: str, *, family: bool, client: ClientInfo) -> None:
        """Revoke a refresh token, or its whole family. Unknown tokens are ignored (RFC 7009)."""
        family_id = await self._refresh_tokens.revoke_token(hash_refresh_token(refresh_token))
        if family_id is None or not family:
            return
        if await self._refresh_tokens.revoke_family(family_id, "revoked"):
            await self._audit.record(
                "token_family_revoked", ip=client.ip, reason="revoked", family_id=str(family_id)
            )

    async def authenticate(self, access_token: str) -> Principal:
        """Return the principal of a bearer token; no I/O when its user is cached.

        Raise `InvalidToken`, `TokenExpired`, or `TokenRevoked` when the user's token
        epoch moved on (log out everywhere, password change, disable: S17).
        """
        if self._verified_version != self._ring.version:
            self._verified.clear()  # a key was retired or replaced: verify everything again
            self._verified_version = self._ring.version
        cache_key = hashlib.sha256(access_token.encode()).digest()
        claims = self._verified.get(cache_key)
        if claims is None:
            claims = self._codec.verify(access_token)
            self._verified.set(cache_key, claims, ttl=claims.expires_at - time.time())
        if claims.client_id is not None:
            # No user behind it: the caller (MachineAccess) checks the client still exists.
            return Principal(
                user_id=claims.user_id,
                email="",
                via="client",
                scopes=claims.scopes,
                client_id=claims.client_id,
            )
        holder = await self._epochs.get(claims.user_id)
        if holder is None:
            raise InvalidToken()
        if holder.epoch != claims.epoch:
            raise TokenRevoked()
        auth_time = claims.auth_time
        return Principal(
            user_id=claims.user_id,
            email=holder.email,
            via="bearer",
            scopes=claims.scopes,
            auth_time=None if auth_time is None else datetime.fromtimestamp(auth_time, UTC),
            amr=claims.amr,
            family_id=claims.family_id,
        )

    async def reauthenticated(self, principal: Principal, amr: tuple[str, ...]) -> AccessGrant:
        """Return a new access token for a bearer caller who just proved themselves again.

        The token's family (its `sid`) gets auth_time now and `amr`, so its refresh
        token, which does not change, goes on issuing tokens with them. `InvalidToken`
        for a token without a family (issued before `sid` existed: refresh it first) or
        whose family has ended.
        """
        if principal.via != "bearer" or principal.family_id is None:
            raise InvalidToken("This access token cannot be renewed; refresh it, then try again.")
        family = await self._refresh_tokens.update_family_auth(
            principal.family_id, principal.user_id, amr
        )
        if family is None:
            raise InvalidToken("This login has ended; log in again.")
        access_token = self._codec.issue(
            principal.user_id,
            family.token_epoch,
            family.scope.split(),
            roles=family.roles,
            auth_time=family.auth_time.timestamp(),
            email_verified=family.email_verified,
            amr=family.amr,
            family_id=principal.family_id,
        )
        return AccessGrant(access_token, self._codec.ttl, family.scope, family.auth_time)

    def _requested_scopes(self, scope: str | None) -> frozenset[str]:
        if scope is None or not scope.strip():
            return self._scopes
        requested = frozenset(scope.split())
        if not requested <= self._scopes:
            raise InvalidScope()
        return requested

    def _pair(
        self,
        user_id: UUID,
        epoch: int,
        scope: str,
        refresh_token: str,
        roles: Iterable[str],
        auth_time: float,
        email_verified: bool,
        amr: Iterable[str],
        family_id: UUID,
    ) -> TokenPair:
        return TokenPair(
            access_token=self._codec.issue(
                user_id,
                epoch,
                scope.split(),
                roles=roles,
                auth_time=auth_time,
                email_verified=email_verified,
                amr=amr,
                family_id=family_id,
            ),
            refresh_token=refresh_token,
            expires_in=self._codec.ttl,
            scope=scope,
        )
