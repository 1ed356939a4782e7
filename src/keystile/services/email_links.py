"""Mailed link tokens: made, stored as hashes, queued with their mail, refused (S34, S36).

A link token is 256 random bits of which only the SHA-256 is stored, bound to one
purpose and one user, single use and short-lived (S34). Links start with the
configured `public_url`, never with the request's Host (S36). `EmailLinks` is what
the email flows and the account notices share: it writes the token and its mail in
the caller's transaction (S38), charges the rate limits of a mailing action, and
refuses a bad token with one answer for every reason.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal, NoReturn
from urllib.parse import quote
from uuid import UUID

import asyncpg

from keystile.errors import InvalidLinkToken, RateLimited
from keystile.rates import Action
from keystile.repositories.audit import AuditLog
from keystile.repositories.email_tokens import PostgresEmailTokens, Purpose
from keystile.repositories.outbox import OutgoingMail, PostgresOutbox
from keystile.repositories.users import User
from keystile.services.rate_limits import RateLimiter
from keystile.services.types import ClientInfo

__all__ = ["EmailLinks", "EmailPolicy", "hash_link_token", "new_link_token", "valid_for"]

_PATHS = {
    "verify_email": "/verify-email",
    "change_email": "/verify-email",
    "reset_password": "/reset-password",
    "undo_email_change": "/undo-email-change",
}


def new_link_token() -> tuple[str, bytes]:
    """Return a new link token (256 bits from the CSPRNG) and the hash that is stored."""
    token = secrets.token_urlsafe(32)
    return token, hash_link_token(token)


def hash_link_token(token: str) -> bytes:
    """Return what is stored for a link token: its SHA-256, never the token (S18, S34)."""
    return hashlib.sha256(token.encode()).digest()


def valid_for(ttl: int) -> dict[str, str]:
    """Return the mail context that says how long a link of `ttl` seconds lasts."""
    if ttl < 2 * 3600:
        return {"valid_for": f"{ttl // 60} minutes"}
    if ttl < 2 * 86400:
        return {"valid_for": f"{ttl // 3600} hours"}
    return {"valid_for": f"{ttl // 86400} days"}


@dataclass(frozen=True, slots=True)
class EmailPolicy:
    """What the settings say about the flows."""

    public_url: str
    verification: Literal["off", "optional", "required"] = "optional"
    verify_ttl_seconds: int = 24 * 3600
    reset_ttl_seconds: int = 30 * 60
    undo_ttl_seconds: int = 7 * 86400
    notify_new_device: bool = True
    notify_password_changed: bool = True
    notify_email_changed: bool = True
    known_device_seconds: float = 30 * 86400.0

    def link(self, purpose: str, token: str) -> str:
        return f"{self.public_url}{_PATHS[purpose]}?token={quote(token)}"

    def ttl(self, purpose: Purpose) -> int:
        """Return how many seconds a link for `purpose` lasts."""
        if purpose == "reset_password":
            return self.reset_ttl_seconds
        if purpose == "undo_email_change":
            return self.undo_ttl_seconds
        return self.verify_ttl_seconds


@dataclass(frozen=True, slots=True)
class EmailLinks:
    """Issue a link with its mail, charge a mailing action, refuse a bad link token."""

    tokens: PostgresEmailTokens
    outbox: PostgresOutbox
    limits: RateLimiter
    audit: AuditLog
    policy: EmailPolicy

    async def issue(
        self,
        connection: asyncpg.Connection,
        user: User,
        purpose: Purpose,
        address: str,
        kind: str,
        **context: str,
    ) -> None:
        """Store a new token for `purpose` and queue its mail to `address`, in `connection`."""
        token, token_hash = new_link_token()
        ttl = self.policy.ttl(purpose)
        await self.tokens.insert(
            connection,
            token_hash=token_hash,
            user_id=user.id,
            purpose=purpose,
            email=address,
            password_changed_at=user.password_changed_at,
            ttl_seconds=ttl,
        )
        values = {"link": self.policy.link(purpose, token), **valid_for(ttl), **context}
        await self.outbox.enqueue(
            connection, OutgoingMail(kind=kind, recipient=address, context=values, user_id=user.id)
        )

    async def charge(self, action: Action, client: ClientInfo, account: str | UUID) -> bool:
        """Charge the address (429 when spent) and the account; False if the account is spent.

        A refused check charges nothing, so the address is charged exactly once.
        """
        try:
            await self.limits.check(action, client, account)
        except RateLimited:
            await self.limits.check(action, client, None)
            return False
        return True

    async def refuse(
        self, kind: str, token_hash: bytes, purposes: list[str], client: ClientInfo
    ) -> NoReturn:
        """Audit why a token was refused, then raise the one answer for every reason."""
        reason = await self.tokens.explain(token_hash, purposes)
        await self.audit.record(kind, ip=client.ip, user_agent=client.user_agent, reason=reason)
        raise InvalidLinkToken()
