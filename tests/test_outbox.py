"""The transactional outbox and its senders against a real SMTP server (S38).

SMTP away: messages wait and go out when it returns. A sender SIGKILLed with a
claimed message: another sends it once the claim's lease ends. A message that
always fails: dead after the configured number of tries. Two senders: each
message once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from quart import Quart

from keystile.embedded import EmbeddedPostgres
from keystile.settings import Settings
from tests.mail_support import SmtpServer, StallingServer, mail_settings, started_app
from tests.support.backing import Backing, make_settings
from tests.support.http import register, services_of, unique_email
from tests.support.processes import SECRET_KEY, start_server, wait_until_ready


@pytest.fixture(name="settings")
def _settings(backing: Backing, private_postgres: tuple[EmbeddedPostgres, str]) -> Settings:
    """Settings on a database of the test's own (PostgreSQL; Redis stays shared).

    Every sender claims every message that is due. On the shared database a sender of a
    test running in another process would claim this module's messages (and fail to
    unseal them, or hang them on a stalling server), so a message's fate here would
    depend on what else runs at the same time.
    """
    return make_settings(backing, database_url=private_postgres[1])


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _eventually(check: Any, *, within: float = 30.0) -> Any:
    """Await `check()` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {within} s"
        await asyncio.sleep(0.05)


async def _row(app: Quart, recipient: str) -> asyncpg.Record | None:
    return await services_of(app).database.fetchrow(
        "SELECT * FROM outbox WHERE lower(recipient) = lower($1) ORDER BY id DESC LIMIT 1",
        recipient,
    )


async def test_mail_waits_while_smtp_is_down_and_goes_out_when_it_returns(
    settings: Settings, smtp: SmtpServer
) -> None:
    # S38: nothing is lost while the server is away, and a wait costs no attempt.
    smtp.stop()
    async with started_app(mail_settings(settings, smtp)) as app:
        client = app.test_client()
        email = unique_email()
        before = _sample("keystile_mail_failed_total", reason="unavailable")
        await register(client, email)

        async def tried() -> bool:
            return _sample("keystile_mail_failed_total", reason="unavailable") > before

        await _eventually(tried)
        row = await _row(app, email)
        assert row is not None
        assert row["sent_at"] is None
        assert row["dead_at"] is None
        assert row["attempts"] == 0
        assert (await client.get("/readyz")).status_code == 200  # readiness ignores SMTP

        smtp.start()
        await smtp.inbox.arrival(email, subject="Confirm")

        async def sent() -> asyncpg.Record | None:
            row = await _row(app, email)
            return row if row is not None and row["sent_at"] is not None else None

        row = await _eventually(sent)
        assert row["attempts"] == 1
        assert row["context"] is None  # the sealed link is dropped once sent


@pytest.mark.slow
async def test_a_message_claimed_by_a_killed_worker_is_sent_by_another(
    backing: Backing,
    private_postgres: tuple[EmbeddedPostgres, str],
    settings: Settings,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    # S38: a worker SIGKILLed after the commit, holding the claim, loses nothing: once the
    # lease ends another sender sends the message, exactly once.
    stalling = StallingServer()
    server = start_server(
        backing,
        tmp_path / "doomed",
        database_url=private_postgres[1],  # the database `settings` names
        workers=1,
        smtp_url=stalling.url,
        smtp_starttls="off",
        smtp_timeout_seconds="60",
        outbox_claim_lease_seconds="2",
        outbox_batch_size="1000",  # claims whatever is due, ours included
        outbox_poll_seconds="0.05",
    )
    connection = await asyncpg.connect(private_postgres[1])
    try:
        wait_until_ready(server)
        email = unique_email()
        async with httpx.AsyncClient(base_url=server.base) as http:
            response = await http.post(
                "/v1/users", json={"email": email, "password": "correct horse battery staple"}
            )
            assert response.status_code == 202

        async def claimed() -> asyncpg.Record | None:
            row = await connection.fetchrow(
                "SELECT * FROM outbox WHERE lower(recipient) = lower($1)", email
            )
            return row if row is not None and row["claim_id"] is not None else None

        first_claim = await _eventually(claimed)
        server.kill_group()  # hung talking to the stalling server, claim held
        row = await connection.fetchrow("SELECT * FROM outbox WHERE id = $1", first_claim["id"])
        assert row["sent_at"] is None
        assert row["claim_id"] == first_claim["claim_id"]

        survivor = mail_settings(settings, smtp, secret_key=SecretStr(SECRET_KEY))
        async with started_app(survivor):
            message = await smtp.inbox.arrival(email, subject="Confirm", within=60)
            assert message["Message-ID"].startswith(f"<keystile.{first_claim['id']}.")

            async def sent() -> asyncpg.Record | None:
                row = await connection.fetchrow(
                    "SELECT * FROM outbox WHERE id = $1 AND sent_at IS NOT NULL", first_claim["id"]
                )
                return row

            row = await _eventually(sent)
        assert row["claim_id"] != first_claim["claim_id"]
        assert row["attempts"] == 2
        assert len(smtp.inbox.to(email)) == 1
    finally:
        server.stop()
        stalling.close()
        await connection.close()


async def test_a_message_that_keeps_failing_ends_dead_after_the_configured_tries(
    settings: Settings, smtp: SmtpServer
) -> None:
    email = unique_email()
    smtp.inbox.refuse[email] = "451 4.3.0 Mailbox busy, try again later"
    dead_before = _sample("keystile_mail_dead_total", kind="verify_email")
    async with started_app(mail_settings(settings, smtp, outbox_max_attempts=3)) as app:
        await register(app.test_client(), email)

        async def dead() -> asyncpg.Record | None:
            row = await _row(app, email)
            return row if row is not None and row["dead_at"] is not None else None

        row = await _eventually(dead)
        kinds = await services_of(app).database.fetch(
            "SELECT e.kind FROM audit_events e JOIN users u ON u.id = e.user_id "
            "WHERE lower(u.email) = lower($1) AND e.kind LIKE 'mail_%' ORDER BY e.id",
            email,
        )
    assert row["attempts"] == 3
    assert row["sent_at"] is None
    assert row["context"] is None
    assert "451" in row["last_error"]
    # At least this one: the counter is the test process's, which other tests also move;
    # the row above proves exactly this message's fate.
    assert _sample("keystile_mail_dead_total", kind="verify_email") >= dead_before + 1
    assert [k["kind"] for k in kinds] == ["mail_failed"] * 3 + ["mail_dead"]
    assert smtp.inbox.to(email) == []


async def test_a_permanently_refused_message_is_dead_at_once(
    settings: Settings, smtp: SmtpServer
) -> None:
    email = unique_email()
    smtp.inbox.refuse[email] = "550 5.1.1 No such mailbox"
    async with started_app(mail_settings(settings, smtp)) as app:
        await register(app.test_client(), email)

        async def dead() -> asyncpg.Record | None:
            row = await _row(app, email)
            return row if row is not None and row["dead_at"] is not None else None

        row = await _eventually(dead)
    assert row["attempts"] == 1
    assert "550" in row["last_error"]


async def test_a_message_sealed_under_another_secret_key_is_dead_not_sent(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    email = unique_email()
    mail_id = await services_of(mail_app).database.fetchval(
        "INSERT INTO outbox (kind, recipient, context) VALUES ('verify_email', $1, $2) "
        "RETURNING id",
        email,
        "gAAAAABnot-a-fernet-token-of-ours",
    )

    async def dead() -> asyncpg.Record | None:
        return await services_of(mail_app).database.fetchrow(
            "SELECT * FROM outbox WHERE id = $1 AND dead_at IS NOT NULL", mail_id
        )

    row = await _eventually(dead)
    assert "unreadable" in row["last_error"]
    assert smtp.inbox.to(email) == []


async def test_two_senders_send_each_message_once(settings: Settings, smtp: SmtpServer) -> None:
    # S38: concurrent senders never claim one row twice (FOR UPDATE SKIP LOCKED).
    shared = mail_settings(settings, smtp, outbox_batch_size=2)
    emails = [unique_email() for _ in range(12)]
    async with started_app(shared) as first, started_app(shared) as second:
        clients = [first.test_client(), second.test_client()]
        await asyncio.gather(*(register(clients[i % 2], email) for i, email in enumerate(emails)))

        async def all_sent() -> bool:
            unsent = await services_of(first).database.fetchval(
                "SELECT count(*) FROM outbox WHERE recipient = ANY($1::text[]) AND sent_at IS NULL",
                emails,
            )
            return unsent == 0

        await _eventually(all_sent)
    for email in emails:
        assert len(smtp.inbox.to(email)) == 1, email


async def test_mail_metrics_are_exported(mail_app: Quart, smtp: SmtpServer) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    await smtp.inbox.arrival(email)
    text = await (await client.get("/metrics")).get_data(as_text=True)
    for name in (
        "keystile_mail_queued_total",
        "keystile_mail_sent_total",
        "keystile_mail_failed_total",
        "keystile_mail_dead_total",
        "keystile_mail_unsent",
        "keystile_mail_oldest_unsent_age_seconds",
    ):
        assert name in text, name
