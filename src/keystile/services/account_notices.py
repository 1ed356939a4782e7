"""Account notices: the mail that registration, login and account changes send (S37, S38).

`AccountNotices` is the `AccountHooks` of `AuthService` (verification mail on
registration, a notice on password change, the `email_verification = "required"`
check and new-device notices on login) and the `FactorNotices` of second factors and
passkeys. A notice is queued in the outbox in the transaction of the change that
causes it (S38), so it commits or rolls back with it; the sender is nudged after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from keystile.errors import DependencyUnavailable, EmailNotVerified
from keystile.repositories.audit import AuditLog
from keystile.repositories.database import Database
from keystile.repositories.outbox import OutgoingMail, PostgresOutbox
from keystile.repositories.users import User
from keystile.services.devices import describe_user_agent
from keystile.services.email_links import EmailLinks, EmailPolicy
from keystile.services.rate_limits import CounterKeys
from keystile.services.types import ClientInfo
from keystile.stores.rate_limits import CounterStore

__all__ = ["AccountNotices"]

_log = logging.getLogger(__name__)

# After commit, wake this worker's sender (polling is the guarantee, this the shortcut).
_NUDGE_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class AccountNotices:
    """The notices of an account; the `AccountHooks` of `AuthService`, the `FactorNotices`."""

    _: KW_ONLY
    database: Database
    outbox: PostgresOutbox
    links: EmailLinks
    marks: CounterStore
    keys: CounterKeys
    audit: AuditLog
    policy: EmailPolicy
    nudge: Callable[[], None] = lambda: None

    # --- hooks called by AuthService ---------------------------------------------------

    async def registered_in_transaction(self, connection: asyncpg.Connection, user: User) -> None:
        """Mail a verification link to a new account (unless verification is off)."""
        if self.policy.verification != "off":
            await self.links.issue(connection, user, "verify_email", user.email, "verify_email")
            self._nudge_after_commit()

    async def password_changed_in_transaction(
        self, connection: asyncpg.Connection, user: User
    ) -> None:
        """Tell the user their password changed (S37)."""
        if self.policy.notify_password_changed:
            await self.password_changed(connection, user)
            self._nudge_after_commit()

    async def authenticated(
        self, user: User, client: ClientInfo, *, known_client: bool = False
    ) -> None:
        """Refuse an unverified address when verification is required; notice new devices.

        A known client (the login gate's mark) is no new device: no Redis call for it.
        """
        if self.policy.verification == "required" and not user.email_verified:
            await self.audit.record(
                "login_refused",
                user_id=user.id,
                ip=client.ip,
                user_agent=client.user_agent,
                reason="email_not_verified",
            )
            raise EmailNotVerified()
        if self.policy.notify_new_device and not known_client:
            await self._notice_new_device(user, client)

    # --- called by second factors and passkeys -----------------------------------------

    async def factor_changed_in_transaction(
        self, connection: asyncpg.Connection, user_id: UUID, email: str, what: str
    ) -> None:
        """Tell the user a second factor was added, removed or used up (docs/mfa.md).

        `what` is the sentence the mail shows, e.g. "An authenticator app was added".
        Always sent: a factor change is never routine.
        """
        await self.outbox.enqueue(
            connection,
            OutgoingMail(
                kind="factor_changed",
                recipient=email,
                user_id=user_id,
                context={
                    "when": _now_text(),
                    "what": what,
                    "link": f"{self.policy.public_url}/forgot-password",
                },
            ),
        )
        self._nudge_after_commit()

    # --- shared with the email flows ---------------------------------------------------

    async def password_changed(self, connection: asyncpg.Connection, user: User) -> None:
        """Queue the "password changed" notice in `connection`; the caller nudges the sender."""
        await self.outbox.enqueue(
            connection,
            OutgoingMail(
                kind="password_changed",
                recipient=user.email,
                user_id=user.id,
                context={"when": _now_text(), "link": f"{self.policy.public_url}/forgot-password"},
            ),
        )

    # --- helpers -------------------------------------------------------------------------

    async def _notice_new_device(self, user: User, client: ClientInfo) -> None:
        ttl = self.policy.known_device_seconds
        device_key = self.keys.key("mail-known-device", str(user.id), client.ip)
        seen_key = self.keys.key("mail-seen-account", str(user.id))
        new_device, first_login = await self.marks.mark_new([device_key, seen_key], ttl)
        if not new_device or first_login:
            return  # a device seen before; or the account's first login, no news to its owner
        device = await asyncio.to_thread(describe_user_agent, client.user_agent)
        mail = OutgoingMail(
            kind="new_device",
            recipient=user.email,
            user_id=user.id,
            context={
                "when": _now_text(),
                "device": device,
                "ip": client.ip or "unknown",
                "link": f"{self.policy.public_url}/account",
            },
        )
        try:
            async with self.database.transaction() as connection:
                await self.outbox.enqueue(connection, mail)
        except DependencyUnavailable:
            _log.warning("new-device notice not queued: postgresql unavailable")
            return
        self.nudge()

    def _nudge_after_commit(self) -> None:
        asyncio.get_running_loop().call_later(_NUDGE_DELAY, self.nudge)


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
