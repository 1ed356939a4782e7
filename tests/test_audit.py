"""The audit log: what is recorded, `keystile audit tail`, and pruning by age."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from quart import Quart

from keystile.app import create_app
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, Client, login, register, services_of, unique_email

ROOT = Path(__file__).resolve().parents[1]


def keystile(backing: Backing, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update(
        KEYSTILE_SETTINGS_FILE=str(ROOT / "settings.toml"),
        KEYSTILE_DATABASE_URL=backing.database_url,
        KEYSTILE_REDIS_URL=backing.redis_url,
        KEYSTILE_SECRET_KEY="k" * 40,
        KEYSTILE_AUDIT_PRUNE_INTERVAL_SECONDS="0",
    )
    return subprocess.run(
        [sys.executable, "-m", "keystile", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_audit_tail_shows_an_accounts_recent_events_without_secrets(
    backing: Backing, app: Quart, client: Client
) -> None:
    email = unique_email()
    await register(client, email)
    headers = {"User-Agent": "audit-test-agent/1.0"}
    assert (await login(client, email, "not the password")).status_code == 401
    response = await client.post(
        "/v1/sessions", json={"email": email, "password": PASSWORD}, headers=headers
    )
    assert response.status_code == 201
    assert (await client.delete("/v1/sessions/current")).status_code == 204
    # Failed logins are written in batches (within 100 ms); the CLI runs in another process.
    await services_of(app).audit_admin.flush_pending()

    result = keystile(backing, "audit", "tail", "-n", "3", "--user", email)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[1] for line in lines] == ["login_failed", "login", "session_revoked"]
    assert all(line.split("\t")[2] == email for line in lines)
    assert "audit-test-agent/1.0" in lines[1]
    assert PASSWORD not in result.stdout
    assert "not the password" not in result.stdout


def test_audit_tail_of_an_unknown_account_says_so(backing: Backing) -> None:
    result = keystile(backing, "audit", "tail", "--user", unique_email())
    assert result.returncode == 2
    assert "No account" in result.stderr


async def test_audit_prune_deletes_only_events_past_the_retention(backing: Backing) -> None:
    old, recent = f"test_old_{uuid.uuid4().hex}", f"test_recent_{uuid.uuid4().hex}"
    connection = await asyncpg.connect(backing.database_url)
    try:
        await connection.execute(
            "INSERT INTO audit_events (kind, at) VALUES ($1, now() - interval '40 days'), "
            "($2, now() - interval '20 days')",
            old,
            recent,
        )
        result = keystile(backing, "audit", "prune", "--older-than", "30")
        assert result.returncode == 0, result.stderr
        assert "deleted" in result.stdout
        kinds = await connection.fetch(
            "SELECT kind FROM audit_events WHERE kind = ANY($1::text[])", [old, recent]
        )
        assert [row["kind"] for row in kinds] == [recent]
    finally:
        await connection.close()


async def test_serving_workers_prune_old_events_by_themselves(backing: Backing) -> None:
    old = f"test_old_{uuid.uuid4().hex}"
    settings = make_settings(backing, housekeeping_interval_seconds=1, audit_retention_days=30)
    connection = await asyncpg.connect(backing.database_url)
    try:
        await connection.execute(
            "INSERT INTO audit_events (kind, at) VALUES ($1, now() - interval '40 days')", old
        )
        async with create_app(settings).test_app():
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not await connection.fetchval(
                    "SELECT count(*) FROM audit_events WHERE kind = $1", old
                ):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the old event was not pruned within 10 s")
    finally:
        await connection.close()


async def test_housekeeping_deletes_long_expired_sessions_and_token_families(
    backing: Backing,
) -> None:
    settings = make_settings(
        backing, housekeeping_interval_seconds=1, expired_record_retention_hours=1
    )
    connection = await asyncpg.connect(backing.database_url)
    try:
        user_id = await connection.fetchval(
            "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
            f"user-{uuid.uuid4().hex}@example.com",
        )
        await connection.execute(
            "INSERT INTO sessions (id_hash, user_id, expires_at) VALUES "
            "($1, $3, now() - interval '2 hours'), ($2, $3, now() + interval '1 hour')",
            os.urandom(32),
            os.urandom(32),
            user_id,
        )
        await connection.execute(
            "INSERT INTO refresh_token_families (user_id, scope, expires_at) VALUES "
            "($1, 'account', now() - interval '2 hours'), "
            "($1, 'account', now() + interval '1 day')",
            user_id,
        )

        async def remaining() -> tuple[int, int]:
            sessions = await connection.fetchval(
                "SELECT count(*) FROM sessions WHERE user_id = $1", user_id
            )
            families = await connection.fetchval(
                "SELECT count(*) FROM refresh_token_families WHERE user_id = $1", user_id
            )
            return sessions, families

        assert await remaining() == (2, 2)
        async with create_app(settings).test_app():
            deadline = time.monotonic() + 10
            while await remaining() != (1, 1):
                assert time.monotonic() < deadline, "expired rows were not deleted within 10 s"
                await asyncio.sleep(0.2)
        assert await remaining() == (1, 1)  # the live session and family stay
    finally:
        await connection.close()
