"""Wire the mail capability: the flows, the notices, the outbox, its sender, the transport.

`build_mail` takes the core pieces (`Foundation`) and returns `MailServices`; the
composition root passes `mail.notices` to `AuthService` as its `AccountHooks` and to
second factors and passkeys as their `FactorNotices`, and `mail.housekeeping` to the
worker's housekeeping loop. The outbox sender runs on the composition root's exit
stack, so shutdown stops it like every other loop.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from keystile.mail.render import MailRenderer
from keystile.mail.sender import OutboxSender, SenderPolicy
from keystile.mail.transports import MaildirTransport, MailTransport, SmtpTransport
from keystile.repositories.email_tokens import PostgresEmailTokens
from keystile.repositories.outbox import PostgresOutbox
from keystile.services.account_notices import AccountNotices
from keystile.services.email_flows import EmailFlows
from keystile.services.email_links import EmailLinks, EmailPolicy
from keystile.services.foundation import Foundation
from keystile.services.housekeeping import HousekeepingJob
from keystile.services.rate_limits import CounterKeys
from keystile.settings import Settings
from keystile.stores.sealing import Sealer
from keystile.tasks import Detached, background

__all__ = ["MailServices", "build_mail", "build_transport", "maildir_path"]

_log = logging.getLogger(__name__)


def maildir_path(settings: Settings) -> Path:
    """Where mail goes without `smtp_url` (and where `keystile mail` reads it)."""
    return settings.serving.data_dir / "mail"


def build_transport(settings: Settings) -> MailTransport:
    """Return the SMTP transport the settings describe, or the development Maildir."""
    if settings.email.smtp_url is None:
        return MaildirTransport(maildir_path(settings))
    return SmtpTransport(
        settings.email.smtp_url.get_secret_value(),
        username=settings.email.smtp_username,
        password=settings.email.smtp_password.get_secret_value()
        if settings.email.smtp_password
        else None,
        starttls=settings.email.smtp_starttls,
        timeout=settings.email.smtp_timeout_seconds,
    )


@dataclass(frozen=True, slots=True)
class MailServices:
    """The mail capability of one worker."""

    flows: EmailFlows  # what the web layer calls: reset, verification, email change
    notices: AccountNotices  # what the account core calls: AccountHooks, FactorNotices
    outbox: PostgresOutbox
    sender: OutboxSender
    renderer: MailRenderer
    # Deletion of settled mail and spent links, run by the worker's housekeeping loop.
    housekeeping: tuple[HousekeepingJob, ...]


async def build_mail(
    base: Foundation, stack: AsyncExitStack, *, transport: MailTransport | None = None
) -> MailServices:
    """Build the mail capability; the sender runs while `stack` is open (if enabled)."""
    settings = base.settings
    # Sealed under the current secret key; mail queued under a previous one still opens.
    current, *previous = base.keys.derive_all("mail outbox")
    sealer: Sealer[dict[str, Any]] = Sealer(
        current, encode=lambda value: value, decode=_as_dict, previous=previous
    )
    outbox = PostgresOutbox(base.database, sealer)
    tokens = PostgresEmailTokens(base.database)
    transport = transport or build_transport(settings)
    if settings.email.smtp_url is None and settings.email.outbox_sender_enabled:
        # Said by the workers that send; a command (which only queues) stays quiet.
        _log.info("no smtp_url: mail goes to %s (development only)", transport.name)
    renderer = MailRenderer(
        sender=settings.email.mail_from,
        site_name=settings.email.mail_site_name,
        public_url=settings.email.public_url,
        template_dir=settings.email.mail_template_dir,
    )
    sender = OutboxSender(
        outbox,
        transport,
        renderer,
        base.audit,
        SenderPolicy(
            batch_size=settings.email.outbox_batch_size,
            lease_seconds=settings.email.outbox_claim_lease_seconds,
            poll_seconds=settings.email.outbox_poll_seconds,
            max_attempts=settings.email.outbox_max_attempts,
            retry_base_seconds=settings.email.outbox_retry_base_seconds,
            retry_max_seconds=settings.email.outbox_retry_max_seconds,
            send_timeout_seconds=settings.email.smtp_timeout_seconds,
        ),
    )
    policy = EmailPolicy(
        public_url=settings.email.public_url,
        verification=settings.email.verification,
        verify_ttl_seconds=settings.email.verify_token_ttl_seconds,
        reset_ttl_seconds=settings.email.reset_token_ttl_seconds,
        undo_ttl_seconds=settings.email.undo_token_ttl_seconds,
        notify_new_device=settings.email.notify_new_device,
        notify_password_changed=settings.email.notify_password_changed,
        notify_email_changed=settings.email.notify_email_changed,
        known_device_seconds=settings.limits.known_client_days * 86_400.0,
    )
    links = EmailLinks(tokens, outbox, base.limits, base.audit, policy)
    notices = AccountNotices(
        database=base.database,
        outbox=outbox,
        links=links,
        marks=base.counters,
        keys=CounterKeys(base.keys.current),  # the same derivation as the rate limiter's
        audit=base.audit,
        policy=policy,
        nudge=sender.nudge,
    )
    detached = Detached(limit=settings.database.pool_size)  # more would wait for the pool
    stack.push_async_callback(detached.wait)  # before PostgreSQL closes: the stack unwinds
    flows = EmailFlows(
        database=base.database,
        users=base.users,
        user_rows=base.user_rows,
        tokens=tokens,
        outbox=outbox,
        links=links,
        notices=notices,
        security=base.security,
        sessions=base.sessions,
        session_records=base.session_records,
        epochs=base.epochs,
        audit=base.audit,
        policy=policy,
        detached=detached,
        nudge=sender.nudge,
    )
    if settings.email.outbox_sender_enabled:
        await stack.enter_async_context(background("outbox-sender", sender.run))
    retention = timedelta(hours=settings.email.outbox_retention_hours)
    return MailServices(
        flows=flows,
        notices=notices,
        outbox=outbox,
        sender=sender,
        renderer=renderer,
        housekeeping=(
            ("outbox", lambda: outbox.delete_settled_before(datetime.now(UTC) - retention)),
            ("email_tokens", lambda: tokens.delete_expired(datetime.now(UTC))),
        ),
    )


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("not a mail context")
    return value
