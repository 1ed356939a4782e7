"""The outbox sender: every worker runs one; together they deliver each message (S38).

Each round claims a batch of due messages (`FOR UPDATE SKIP LOCKED`, with a lease),
opens one transport session, sends them one by one and marks each sent right
after the server took it. Delivery semantics:

- A message is sent at most once per successful claim: a claim leads to one SMTP
  transaction at most, and a claim whose lease ran out is not used any more.
- Nothing is lost: a message exists from the commit of the change that caused it;
  if its sender dies (SIGKILL) after claiming and before sending, the lease runs out
  and another sender claims it.
- The one window for a duplicate is a sender dying after the server accepted the
  message and before the "sent" mark commits (milliseconds): the next claim sends
  it again, with the same Message-ID, so mail clients can fold the two.

Failures: an unreachable server releases the batch untried (no attempt counted) and
backs off; a transient failure retries the message after exponential backoff with
jitter; a permanent one, or `max_attempts` tries, marks it dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field

from keystile import metrics
from keystile.errors import DependencyUnavailable
from keystile.mail.render import MailRenderer
from keystile.mail.transports import (
    Delivery,
    MailTransport,
    PermanentFailure,
    TransientFailure,
    TransportUnavailable,
)
from keystile.repositories.audit import AuditLog
from keystile.repositories.outbox import ClaimedMail, PostgresOutbox
from keystile.tasks import stop_if_cancelled

__all__ = ["OutboxSender", "RoundResult", "SenderPolicy"]

_log = logging.getLogger(__name__)

# While the server is unreachable, retry at least this often.
_UNAVAILABLE_MAX_WAIT = 60.0
_STATS_EVERY = 15.0


@dataclass(frozen=True, slots=True)
class SenderPolicy:
    """How a sender claims and retries (the `outbox_*` settings)."""

    batch_size: int = 10
    lease_seconds: float = 60.0
    poll_seconds: float = 1.0
    max_attempts: int = 8
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    send_timeout_seconds: float = 10.0

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff with full jitter around the nominal delay (0.5x to 1.5x)."""
        growth = 2.0 ** max(0, attempts - 1)
        nominal = min(self.retry_max_seconds, self.retry_base_seconds * growth)
        return nominal * random.uniform(0.5, 1.5)


@dataclass(frozen=True, slots=True)
class RoundResult:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    dead: int = 0
    unavailable: bool = False


@dataclass(frozen=True, slots=True)
class OutboxSender:
    """Claim due messages, render them, hand them to the transport, settle each one.

    The composition root runs `run` for the worker's life (`keystile.tasks.background`).
    """

    outbox: PostgresOutbox
    transport: MailTransport
    renderer: MailRenderer
    audit: AuditLog
    policy: SenderPolicy
    _nudged: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def nudge(self) -> None:
        """Wake this worker's sender now: a message was just queued here."""
        self._nudged.set()

    async def run(self) -> None:
        """Send until cancelled: full batches back to back, otherwise poll or wait for a nudge."""
        unavailable_wait = 0.0
        last_stats = 0.0
        while True:
            # A cancel that a library turned into another error (and something suppressed)
            # must still stop the sender; see `stop_if_cancelled`.
            stop_if_cancelled()
            try:
                result = await self.run_once()
            except DependencyUnavailable:
                stop_if_cancelled()
                result = RoundResult()
            except Exception:  # a bug here must never stop the mail for good
                stop_if_cancelled()
                _log.exception("outbox sender round failed")
                result = RoundResult()
            if time.monotonic() - last_stats >= _STATS_EVERY:
                last_stats = time.monotonic()
                await self._sample()
            if result.unavailable:
                limit = min(_UNAVAILABLE_MAX_WAIT, self.policy.retry_max_seconds)
                unavailable_wait = min(limit, max(self.policy.poll_seconds, unavailable_wait * 2))
                await asyncio.sleep(unavailable_wait * random.uniform(0.8, 1.2))
                continue
            unavailable_wait = 0.0
            if result.claimed < self.policy.batch_size:
                await self._wait(self.policy.poll_seconds)

    async def _wait(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 a stop (cancel) arriving just as
        # wait_for times out is turned into TimeoutError and lost, and the loop runs on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._nudged.wait()
        self._nudged.clear()

    async def _sample(self) -> None:
        # Like a round, a failed sample must not stop the mail: `background` would restart
        # the sender, and a sample failing every time would leave one round per backoff.
        try:
            stats = await self.outbox.stats()
        except DependencyUnavailable:
            stop_if_cancelled()
            return
        except Exception:
            stop_if_cancelled()
            _log.exception("outbox stats not sampled")
            return
        metrics.MAIL_UNSENT.set(stats.unsent)
        metrics.MAIL_OLDEST_UNSENT_AGE.set(stats.oldest_unsent_age)

    async def run_once(self) -> RoundResult:
        """Claim one batch and deliver it; return what happened."""
        policy = self.policy
        claimed = await self.outbox.claim(policy.batch_size, policy.lease_seconds)
        if not claimed:
            return RoundResult()
        lease_ends = time.monotonic() + policy.lease_seconds
        sent = failed = dead = 0
        pending = list(claimed)
        try:
            async with self.transport.open() as delivery:
                while pending:
                    # Never send on a lapsed claim (another sender may hold the row now), and
                    # after the first message, none whose send could outlast the lease.
                    margin = policy.send_timeout_seconds if len(pending) < len(claimed) else 0.0
                    if time.monotonic() + margin > lease_ends:
                        break
                    mail = pending.pop(0)
                    outcome = await self._deliver(delivery, mail)
                    sent += outcome == "sent"
                    failed += outcome == "failed"
                    dead += outcome == "dead"
        except TransportUnavailable as exc:
            metrics.MAIL_FAILED.labels("unavailable").inc()
            _log.warning("mail server unavailable; messages wait", extra={"error": str(exc)})
            await self._release(pending)
            return RoundResult(claimed=len(claimed), unavailable=True)
        await self._release(pending)
        return RoundResult(claimed=len(claimed), sent=sent, failed=failed, dead=dead)

    async def _release(self, pending: list[ClaimedMail]) -> None:
        for mail in pending:
            with contextlib.suppress(DependencyUnavailable):
                await self.outbox.release(mail)

    async def _deliver(self, delivery: Delivery, mail: ClaimedMail) -> str:
        try:
            context = self.outbox.unseal(mail)
        except ValueError:
            # Sealed under another secret key: no sender of this deployment can read it.
            return await self._fail(
                mail, "context unreadable (secret key changed?)", permanent=True
            )
        try:
            message = self.renderer.render(
                mail.kind,
                mail.recipient,
                context,
                mail_id=mail.id,
                created=mail.created_at.timestamp(),
            )
        except Exception as exc:  # a broken template override: retried after a fix
            _log.exception("mail template failed", extra={"kind": mail.kind, "mail_id": mail.id})
            return await self._fail(mail, f"template: {type(exc).__name__}", permanent=False)
        link = context.get("link")
        try:
            await delivery.send(message, link=link if isinstance(link, str) else None)
        except PermanentFailure as exc:
            return await self._fail(mail, str(exc), permanent=True)
        except TransientFailure as exc:
            return await self._fail(mail, str(exc), permanent=False)
        metrics.MAIL_SENT.labels(mail.kind).inc()
        if not await self.outbox.mark_sent(mail):
            _log.warning("mail sent after its claim lapsed", extra={"mail_id": mail.id})
        await self.audit.record(
            "mail_sent", user_id=mail.user_id, mail_kind=mail.kind, mail_id=mail.id
        )
        return "sent"

    async def _fail(self, mail: ClaimedMail, error: str, *, permanent: bool) -> str:
        is_dead = permanent or mail.attempts >= self.policy.max_attempts
        retry_in = None if is_dead else self.policy.retry_delay(mail.attempts)
        await self.outbox.mark_failed(mail, error, retry_in)
        metrics.MAIL_FAILED.labels("permanent" if permanent else "transient").inc()
        _log.warning(
            "mail delivery failed",
            extra={
                "mail_id": mail.id,
                "kind": mail.kind,
                "attempts": mail.attempts,
                "error": error,
                "dead": is_dead,
            },
        )
        await self.audit.record(
            "mail_failed",
            user_id=mail.user_id,
            mail_kind=mail.kind,
            mail_id=mail.id,
            attempts=mail.attempts,
            error=error,
        )
        if is_dead:
            metrics.MAIL_DEAD.labels(mail.kind).inc()
            await self.audit.record(
                "mail_dead", user_id=mail.user_id, mail_kind=mail.kind, mail_id=mail.id
            )
            return "dead"
        return "failed"
