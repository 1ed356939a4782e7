"""Email flows: verification, password reset, email change and its undo (S34-S37).

Each flow mails a link (`EmailLinks`, services/email_links.py) and finishes when the
link is followed; the mail is queued in the transaction of the change that causes it
(S38), and the notices a flow sends are `AccountNotices`'.

Requests that mail a link to an address given by the caller (forgot password,
resend verification while logged out) answer the same way, in the same time,
whether or not the address has an account (S35): they are answered before the
statement that looks the address up runs (`Detached`; shutdown waits for it). Every
mailing action has a per-address rate limit (429) and a per-account one, past which
the answer stays the same and no mail goes out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from typing import Literal
from uuid import UUID

import asyncpg

from keystile import metrics
from keystile.errors import Conflict, InvalidInput, InvalidLinkToken
from keystile.rates import Action
from keystile.repositories.audit import AuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.database import Database
from keystile.repositories.email_tokens import EmailTokenRecord, PostgresEmailTokens, Purpose
from keystile.repositories.outbox import PostgresOutbox
from keystile.repositories.sessions import SessionRepository
from keystile.repositories.users import PostgresUserRepository, User
from keystile.services.account_notices import AccountNotices
from keystile.services.account_security import AccountSecurity, active_user
from keystile.services.email_links import (
    EmailLinks,
    EmailPolicy,
    hash_link_token,
    new_link_token,
    valid_for,
)
from keystile.services.revocation import TokenEpochs
from keystile.services.sessions import SessionService
from keystile.services.types import ClientInfo, Principal
from keystile.tasks import Detached

__all__ = ["EmailFlows", "LinkKind"]

LinkKind = Literal["verify", "reset", "undo"]
_VERIFY: list[str] = ["verify_email", "change_email"]
_RESET: list[str] = ["reset_password"]
_UNDO: list[str] = ["undo_email_change"]
_PURPOSES: dict[LinkKind, list[str]] = {"verify": _VERIFY, "reset": _RESET, "undo": _UNDO}


@dataclass(frozen=True, slots=True)
class EmailFlows:
    """The mail flows of an account: password reset, verification, email change and undo."""

    _: KW_ONLY
    database: Database
    users: CachedUserRepository
    user_rows: PostgresUserRepository  # writes inside this service's own transactions
    tokens: PostgresEmailTokens
    outbox: PostgresOutbox
    links: EmailLinks
    notices: AccountNotices
    security: AccountSecurity
    sessions: SessionService
    session_records: SessionRepository
    epochs: TokenEpochs
    audit: AuditLog
    policy: EmailPolicy
    detached: Detached  # requests by address, answered before their statement runs
    nudge: Callable[[], None] = lambda: None

    # --- password reset ------------------------------------------------------------------

    async def request_password_reset(self, email: str, client: ClientInfo) -> None:
        """Mail a reset link if an active account has `email`; the same answer either way."""
        await self._request_by_email(
            Action.PASSWORD_RESET, email, "reset_password", "password_reset", client
        )

    async def confirm_password_reset(
        self, token: str, new_password: str, client: ClientInfo
    ) -> None:
        """Set a new password with a reset token; every session and token family ends (S37).

        `InvalidLinkToken` for any bad token (checked before the password), then
        `PasswordPolicyViolation` for a weak password; either way nothing changes.
        """
        token_hash = hash_link_token(token)
        if await self.tokens.peek(token_hash, _RESET) is None:
            await self.links.refuse("password_reset_failed", token_hash, _RESET, client)
        new_hash = await self.security.hash_new_password(new_password)
        async with self.database.transaction() as connection:
            record = await self.tokens.consume(connection, token_hash, _RESET)
            user = None
            if record is not None:
                user = await self.user_rows.set_password_hash(connection, record.user_id, new_hash)
            if user is not None:
                await self.tokens.delete_user_tokens(connection, user.id, _RESET)
                if self.policy.notify_password_changed:
                    await self.notices.password_changed(connection, user)
        if user is None:
            await self.links.refuse("password_reset_failed", token_hash, _RESET, client)
        await self.users.forget_cached(user.email)
        await self.security.end_logins(user.id, client, reason="password_reset")
        self.nudge()

    # --- verification ----------------------------------------------------------------------

    async def resend_verification(self, principal: Principal, client: ClientInfo) -> None:
        """Mail the caller a new verification link, unless verified or verification is off."""
        allowed = await self.links.charge(Action.EMAIL_VERIFICATION, client, principal.user_id)
        user = await active_user(self.users, principal.user_id)
        sent = False
        if allowed and not user.email_verified and self.policy.verification != "off":
            async with self.database.transaction() as connection:
                await self.links.issue(connection, user, "verify_email", user.email, "verify_email")
            sent = True
            self.nudge()
        await self.audit.record(
            "email_verification_requested",
            user_id=user.id,
            ip=client.ip,
            user_agent=client.user_agent,
            sent=sent,
        )

    async def resend_verification_to(self, email: str, client: ClientInfo) -> None:
        """Mail a new verification link to an unverified account of `email`, if there is one.

        For the logged-out (and, with verification required, locked-out) owner:
        answers the same whether or not such an account exists (S35).
        """
        if self.policy.verification == "off":
            await self.links.charge(Action.EMAIL_VERIFICATION, client, email)
            return
        await self._request_by_email(
            Action.EMAIL_VERIFICATION, email, "verify_email", "verify_email", client
        )

    async def confirm_email(
        self, token: str, client: ClientInfo, principal: Principal | None = None
    ) -> str:
        """Verify an address, or make a new one the account's; return "verified" or "changed".

        The token must be the caller's when the caller is logged in. Changing the
        address tells the old one, with a link that undoes it (S37).
        """
        token_hash = hash_link_token(token)
        try:
            async with self.database.transaction() as connection:
                record = await self.tokens.consume(connection, token_hash, _VERIFY)
                if record is None or (
                    principal is not None and principal.user_id != record.user_id
                ):
                    raise _Refused()  # rolls the use of another user's token back
                user = await self._set_email(connection, record.user_id, record.email)
                if record.purpose == "change_email":
                    await self.tokens.delete_user_tokens(connection, user.id, ["change_email"])
                    if self.policy.notify_email_changed:
                        await self.links.issue(
                            connection,
                            user,
                            "undo_email_change",
                            record.user_email,
                            "email_changed",
                            new_email=user.email,
                        )
        except _Refused:
            await self.links.refuse("email_verification_failed", token_hash, _VERIFY, client)
        await self._email_moved(user.id, record.user_email, user.email)
        outcome = "changed" if record.purpose == "change_email" else "verified"
        await self.audit.record(
            "email_changed" if outcome == "changed" else "email_verified",
            user_id=user.id,
            ip=client.ip,
            user_agent=client.user_agent,
        )
        self.nudge()
        return outcome

    # --- email change --------------------------------------------------------------------

    async def request_email_change(
        self, principal: Principal, new_email: str, current_password: str, client: ClientInfo
    ) -> None:
        """Mail a confirmation link to `new_email`; the address changes when it is followed.

        Needs the current password. An address that already has an account gets no
        mail, and the answer does not say so.
        """
        allowed = await self.links.charge(Action.EMAIL_CHANGE, client, principal.user_id)
        user = await self.security.prove_password(
            principal, current_password, client, failure="email_change_failed", reason="password"
        )
        if new_email.lower() == user.email.lower():
            raise InvalidInput("That is already the address of this account.")
        taken = await self.users.select_user_by_email(new_email) is not None
        sent = allowed and not taken
        if sent:
            async with self.database.transaction() as connection:
                await self.links.issue(connection, user, "change_email", new_email, "email_change")
            self.nudge()
        await self.audit.record(
            "email_change_requested",
            user_id=user.id,
            ip=client.ip,
            user_agent=client.user_agent,
            sent=sent,
        )

    async def undo_email_change(self, token: str, client: ClientInfo) -> None:
        """Put the old address back and end every session and token of the account (S37)."""
        token_hash = hash_link_token(token)
        try:
            async with self.database.transaction() as connection:
                record = await self.tokens.consume(connection, token_hash, _UNDO)
                if record is None:
                    raise _Refused()
                user = await self._set_email(connection, record.user_id, record.email)
                await self.tokens.delete_user_tokens(connection, user.id, [*_VERIFY, *_RESET])
        except _Refused:
            await self.links.refuse("email_change_undo_failed", token_hash, _UNDO, client)
        await self._email_moved(user.id, record.user_email, user.email)
        await self.users.bump_token_epoch(user.id)
        await self.security.end_logins(user.id, client, reason="email_change_undone")

    async def check_link(self, kind: LinkKind, token: str) -> EmailTokenRecord | None:
        """Return what a link's token is for if it is live; spends nothing (a GET may call it)."""
        return await self.tokens.peek(hash_link_token(token), _PURPOSES[kind])

    # --- helpers -------------------------------------------------------------------------

    async def _request_by_email(
        self, action: Action, email: str, purpose: Purpose, kind: str, client: ClientInfo
    ) -> None:
        allowed = await self.links.charge(action, client, email)
        token, token_hash = new_link_token()
        ttl = self.policy.ttl(purpose)
        sealed = self.outbox.seal({"link": self.policy.link(purpose, token), **valid_for(ttl)})
        if not allowed:
            return
        # Answered before the statement runs: it writes three more rows when the address
        # has an account, and the answer's time must not tell (S35).
        issued = self.tokens.request_by_email(
            email,
            token_hash=token_hash,
            purpose=purpose,
            ttl_seconds=ttl,
            kind=kind,
            sealed_context=sealed,
            only_unverified=purpose == "verify_email",
            audit_kind=f"{action}_requested",
            ip=client.ip,
            user_agent=client.user_agent,
        )
        await self.detached.submit(self._queued(kind, issued), name=f"{action}_requested")

    async def _queued(self, kind: str, issued: Awaitable[int | None]) -> None:
        if await issued is not None:  # the outbox id: an account got mail
            metrics.MAIL_QUEUED.labels(kind).inc()
            self.nudge()

    async def _set_email(self, connection: asyncpg.Connection, user_id: UUID, email: str) -> User:
        try:
            user = await self.user_rows.set_verified_email(connection, user_id, email)
        except asyncpg.UniqueViolationError:
            raise Conflict("That address now belongs to another account.") from None
        if user is None:
            raise InvalidLinkToken()
        return user

    async def _email_moved(self, user_id: UUID, old: str, new: str) -> None:
        # Sessions and bearer checks cache the user's email: drop them everywhere.
        await self.users.forget_cached(old, new)
        await self.epochs.invalidate(user_id)
        for record in await self.session_records.select_user_sessions(user_id, 1000):
            await self.sessions.cache.invalidate(record.id_hash.hex())


class _Refused(Exception):
    """A token refused inside a transaction: it rolls back, then the refusal is audited."""
