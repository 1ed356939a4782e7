"""JWT access tokens: signed with the key ring, verified strictly and locally (S13-S15)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any
from uuid import UUID

import jwt

from keystile.errors import InvalidToken, TokenExpired
from keystile.services.keys import KeyRing

__all__ = ["ACCESS_TOKEN_TYPE", "AccessClaims", "AccessTokenCodec"]

# RFC 9068: the `typ` of a JWT access token, so no other JWT of ours passes as one (S15).
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
_REQUIRED = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "scope", "epoch"]


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says, already type-checked."""

    user_id: UUID  # for a client-credentials token: the client's id
    epoch: int
    scopes: frozenset[str]
    expires_at: float
    roles: frozenset[str] = frozenset()
    auth_time: float | None = None  # when the user last proved a password (OIDC `auth_time`)
    client_id: UUID | None = None  # set on client-credentials tokens only
    audience: str = ""
    issued_at: float = 0.0
    amr: frozenset[str] = frozenset()  # RFC 8176: how the user authenticated
    family_id: UUID | None = None  # `sid`: the token family (login) it was issued for


@dataclass(frozen=True, slots=True)
class AccessTokenCodec:
    """Issue and verify access tokens.

    Verification never lets the token choose how it is checked: the algorithm is
    the one of the key named by `kid` in our ring (a dictionary lookup, never a
    path or a URL), `jku`/`x5u`/`jwk` headers are ignored, any `crit` header is
    refused (we implement no extension), and every registered claim is required.
    """

    ring: KeyRing
    _: KW_ONLY
    issuer: str
    audience: str
    ttl: int
    leeway: int
    clock: Callable[[], float] = time.time
    _jwt: jwt.PyJWT = field(init=False, repr=False, default_factory=jwt.PyJWT)

    def issue(
        self,
        user_id: UUID,
        epoch: int,
        scopes: Iterable[str],
        *,
        roles: Iterable[str] = (),
        auth_time: float | None = None,
        email_verified: bool | None = None,
        amr: Iterable[str] = (),
        family_id: UUID | None = None,
    ) -> str:
        """Return a signed access token for the user, valid for `ttl` seconds.

        `roles` go into a `roles` claim for relying parties; keystile itself checks
        the user's live roles. `auth_time` is when the user last proved a password.
        `email_verified` (OpenID Connect's claim) is included when given, and `amr`
        (RFC 8176: pwd, otp, hwk) when not empty. `family_id` goes into `sid` (the
        login's token family, as OpenID's session id), so a re-authentication can
        refresh the family the caller's token belongs to.
        """
        extra: dict[str, Any] = {}
        if family_id is not None:
            extra["sid"] = str(family_id)
        if amr:
            extra["amr"] = sorted(amr)
        if roles:
            extra["roles"] = sorted(roles)
        if auth_time is not None:
            extra["auth_time"] = int(auth_time)
        if email_verified is not None:
            extra["email_verified"] = email_verified
        return self._sign(str(user_id), epoch, scopes, self.audience, self.ttl, extra)

    def issue_client(
        self, client_id: UUID, scopes: Iterable[str], *, audience: str | None, ttl: int
    ) -> str:
        """Return a client-credentials token: `sub` and `client_id` are the client (no user)."""
        extra = {"client_id": str(client_id)}
        return self._sign(str(client_id), 0, scopes, audience or self.audience, ttl, extra)

    def _sign(
        self,
        subject: str,
        epoch: int,
        scopes: Iterable[str],
        audience: str,
        ttl: int,
        extra: dict[str, Any],
    ) -> str:
        key = self.ring.signing_key()
        assert key.private_key is not None  # signing_key() only returns keys that can sign
        now = int(self.clock())
        payload = {
            "iss": self.issuer,
            "aud": audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            "scope": " ".join(sorted(scopes)),
            "epoch": epoch,
            **extra,
        }
        return self._jwt.encode(
            payload,
            key.private_key,
            algorithm=key.alg,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )

    def verify(self, token: str, *, any_audience: bool = False) -> AccessClaims:
        """Return the claims of a genuine, current token; raise `InvalidToken` otherwise.

        `TokenExpired` (a subclass) tells a client that refreshing will help.
        `any_audience` (introspection only) accepts tokens issued for another audience;
        the caller must then check `AccessClaims.audience` itself.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken() from None
        if "crit" in header or header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken()
        kid = header.get("kid")
        key = self.ring.verification_key(kid) if isinstance(kid, str) else None
        if key is None or header.get("alg") != key.alg:
            raise InvalidToken()
        try:
            payload = self._jwt.decode(
                token,
                key.public_key,
                algorithms=[key.alg],
                audience=None if any_audience else self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": _REQUIRED,
                    "strict_aud": not any_audience,
                    "verify_aud": not any_audience,
                },
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.PyJWTError:
            raise InvalidToken() from None
        return _claims(payload)


def _claims(payload: dict[str, Any]) -> AccessClaims:
    epoch, scope, exp = payload["epoch"], payload["scope"], payload["exp"]
    if type(epoch) is not int or not isinstance(scope, str) or type(exp) is not int:
        raise InvalidToken()
    roles, auth_time, aud = payload.get("roles", []), payload.get("auth_time"), payload["aud"]
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise InvalidToken()
    if (auth_time is not None and type(auth_time) is not int) or not isinstance(aud, str):
        raise InvalidToken()
    try:
        user_id = UUID(str(payload["sub"]))
        client_id = UUID(payload["client_id"]) if "client_id" in payload else None
        family_id = UUID(payload["sid"]) if "sid" in payload else None
    except (ValueError, TypeError, AttributeError):
        raise InvalidToken() from None
    if client_id is not None and client_id != user_id:
        raise InvalidToken()
    amr = payload.get("amr", [])
    if not isinstance(amr, list) or not all(isinstance(method, str) for method in amr):
        raise InvalidToken()
    return AccessClaims(
        user_id=user_id,
        epoch=epoch,
        scopes=frozenset(scope.split()),
        expires_at=float(exp),
        roles=frozenset(roles),
        auth_time=None if auth_time is None else float(auth_time),
        client_id=client_id,
        audience=aud,
        issued_at=float(payload["iat"]) if type(payload["iat"]) is int else 0.0,
        amr=frozenset(amr),
        family_id=family_id,
    )
