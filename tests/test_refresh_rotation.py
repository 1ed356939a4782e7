"""Refresh-token rotation: single use, one successor, reuse detection, atomicity (S16, S33)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from quart import Quart

from keystile.app import create_app
from keystile.services.tokens import hash_refresh_token
from tests.support.backing import Backing, make_settings
from tests.support.http import Client, services_of
from tests.support.statements import Statements
from tests.support.tokens import bearer, error_code, new_user_tokens, refresh


@pytest.fixture(name="db")
async def _db(backing: Backing) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(backing.database_url)
    yield connection
    await connection.close()


async def _children(db: asyncpg.Connection, token: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE parent_hash = $1", hash_refresh_token(token)
        )
    )


async def _audit_kinds(db: asyncpg.Connection, email: str) -> list[str]:
    rows = await db.fetch(
        "SELECT a.kind FROM audit_events a JOIN users u ON u.id = a.user_id "
        "WHERE u.email = $1 ORDER BY a.id",
        email,
    )
    return [row["kind"] for row in rows]


async def test_twenty_parallel_refreshes_yield_one_successor(
    backing: Backing, db: asyncpg.Connection
) -> None:
    # S16: 20 parallel uses of one token yield at most one new family member; inside the
    # grace window every caller gets that same successor (the multi-tab race).
    app = create_app(make_settings(backing, db_pool_size=8))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        _, body = await new_user_tokens(client)
        responses = await asyncio.gather(
            *(refresh(client, body["refresh_token"]) for _ in range(20))
        )
        assert [r.status_code for r in responses] == [200] * 20
        successors = {(await r.get_json())["refresh_token"] for r in responses}
        assert len(successors) == 1
        assert await _children(db, body["refresh_token"]) == 1
        (successor,) = successors
        assert (await refresh(client, successor)).status_code == 200


async def test_reuse_inside_the_grace_window_returns_the_same_successor(
    client: Client, db: asyncpg.Connection
) -> None:
    _, body = await new_user_tokens(client)
    first = await (await refresh(client, body["refresh_token"])).get_json()
    again = await refresh(client, body["refresh_token"])
    assert again.status_code == 200
    assert (await again.get_json())["refresh_token"] == first["refresh_token"]
    assert await _children(db, body["refresh_token"]) == 1
    assert (await refresh(client, first["refresh_token"])).status_code == 200


async def test_reuse_inside_the_grace_window_never_returns_a_revoked_successor(
    client: Client,
) -> None:
    # S16: the grace window hands back the successor only while it is live; once it was
    # revoked, a reuse of its parent is a reuse like any other and ends the family.
    _, body = await new_user_tokens(client)
    first = await (await refresh(client, body["refresh_token"])).get_json()
    revoked = await client.post("/v1/tokens/revoke", json={"refresh_token": first["refresh_token"]})
    assert revoked.status_code == 204
    again = await refresh(client, body["refresh_token"])
    assert await error_code(again) == "invalid_refresh_token"


async def test_reuse_after_the_grace_window_revokes_the_family(
    backing: Backing, db: asyncpg.Connection
) -> None:
    # S16: a used token presented again after the window means it was copied: the whole
    # family ends, and every later use of any member is refused.
    app = create_app(make_settings(backing, refresh_reuse_grace_seconds=0))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        email, body = await new_user_tokens(client)
        second = await (await refresh(client, body["refresh_token"])).get_json()
        await asyncio.sleep(0.05)

        reuse = await refresh(client, body["refresh_token"])
        assert await error_code(reuse) == "invalid_refresh_token"
        assert await error_code(await refresh(client, second["refresh_token"])) == (
            "invalid_refresh_token"
        )
        assert (await refresh(client, body["refresh_token"])).status_code == 401
        assert await _children(db, second["refresh_token"]) == 0
        # Access tokens already issued live out their short lifetime; the family is gone.
        assert (
            await client.get("/v1/me", headers=bearer(second["access_token"]))
        ).status_code == 200

    kinds = await _audit_kinds(db, email)
    assert kinds.count("refresh_reuse_detected") == 1
    assert kinds.count("token_family_revoked") == 1
    assert "login" in kinds


async def test_refresh_of_an_expired_family_is_refused(
    client: Client, db: asyncpg.Connection
) -> None:
    # S16: absolute expiry of the family, whatever the token's own idle expiry says.
    _, body = await new_user_tokens(client)
    await db.execute(
        "UPDATE refresh_token_families SET expires_at = now() - interval '1 second' "
        "WHERE id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
        hash_refresh_token(body["refresh_token"]),
    )
    assert await error_code(await refresh(client, body["refresh_token"])) == "invalid_refresh_token"


async def test_refresh_tokens_expire_when_idle(client: Client, db: asyncpg.Connection) -> None:
    _, body = await new_user_tokens(client)
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        hash_refresh_token(body["refresh_token"]),
    )
    assert (await refresh(client, body["refresh_token"])).status_code == 401


async def test_idle_expiry_never_outlives_the_family(
    client: Client, db: asyncpg.Connection
) -> None:
    _, body = await new_user_tokens(client)
    row = await db.fetchrow(
        "SELECT t.expires_at AS token, f.expires_at AS family FROM refresh_tokens t "
        "JOIN refresh_token_families f ON f.id = t.family_id WHERE t.token_hash = $1",
        hash_refresh_token(body["refresh_token"]),
    )
    assert row["token"] <= row["family"]


async def test_a_refresh_rotates_its_token_in_one_statement(app: Quart, client: Client) -> None:
    # Issue 12: the token marked used and its successor inserted in one round trip.
    _, body = await new_user_tokens(client)
    statements = Statements()
    await statements.observe(services_of(app).database.pool)
    rotated = await refresh(client, body["refresh_token"])
    assert rotated.status_code == 200, await rotated.get_data(as_text=True)
    assert len(statements.seen) == 1, statements.seen
    (statement,) = statements.seen
    assert "UPDATE refresh_tokens" in statement
    assert "INSERT INTO refresh_tokens" in statement


async def test_a_refresh_token_from_before_account_selectors_still_rotates(
    backing: Backing, db: asyncpg.Connection
) -> None:
    # A 43-character token (issued before tokens named their account) keeps working, and
    # so do its successors, which keep its form; it is charged per address only (S27).
    settings = make_settings(backing, rate_limit_refresh_per_account="1/minute")
    async with create_app(settings).test_app() as test_app:
        client = test_app.test_client()
        _, body = await new_user_tokens(client)
        family_id = await db.fetchval(
            "SELECT family_id FROM refresh_tokens WHERE token_hash = $1",
            hash_refresh_token(body["refresh_token"]),
        )
        legacy = secrets.token_urlsafe(32)
        await db.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) "
            "VALUES ($1, $2, now() + interval '1 hour')",
            hash_refresh_token(legacy),
            family_id,
        )
        for _ in range(3):
            rotated = await refresh(client, legacy)
            assert rotated.status_code == 200, await rotated.get_data(as_text=True)
            legacy = (await rotated.get_json())["refresh_token"]
            assert len(legacy) == 43


async def test_a_token_no_server_could_have_issued_is_refused_without_a_lookup(
    app: Quart, client: Client
) -> None:
    # An 87-character token whose tag does not check, or any other length: 401 at once.
    _, body = await new_user_tokens(client)
    token = body["refresh_token"]
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    statements = Statements()
    await statements.observe(services_of(app).database.pool)
    for made_up in (tampered, token[:-1], token + "A", "C" * 64):
        assert await error_code(await refresh(client, made_up)) == "invalid_refresh_token"
    assert statements.seen == []
    assert (await refresh(client, token)).status_code == 200
    assert statements.seen


async def test_worker_killed_mid_refresh_leaves_the_family_whole(
    app: Quart, client: Client, db: asyncpg.Connection, backing: Backing
) -> None:
    # S33: the token is marked used and its successor inserted in one statement. Hold
    # the refresh at its INSERT, kill its connection, and nothing of it stays.
    _, body = await new_user_tokens(client)
    token = body["refresh_token"]
    token_hash = hash_refresh_token(token)
    successor_hash = hash_refresh_token(
        services_of(app).tokens._format.successor(token, services_of(app).tokens.account_of(token))
    )
    family_id = await db.fetchval(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1", token_hash
    )
    blocker = db.transaction()
    await blocker.start()
    # An uncommitted row with the successor's key makes the refresh's INSERT wait on it.
    await db.execute(
        "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) "
        "VALUES ($1, $2, now() + interval '1 hour')",
        successor_hash,
        family_id,
    )
    pending = asyncio.ensure_future(refresh(client, token))
    killer = await asyncpg.connect(backing.database_url)
    try:
        pid = await _wait_for_blocked_insert(killer)
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await killer.close()
    response = await pending
    await blocker.rollback()
    assert response.status_code == 503

    used_at = await db.fetchval(
        "SELECT used_at FROM refresh_tokens WHERE token_hash = $1", token_hash
    )
    assert used_at is None  # the UPDATE died with its transaction
    assert await _children(db, token) == 0
    retried = await refresh(client, token)
    assert retried.status_code == 200
    assert await _children(db, token) == 1


async def _wait_for_blocked_insert(connection: asyncpg.Connection) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = await connection.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'keystile' "
            "AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO refresh_tokens%'"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.02)
    raise AssertionError("the refresh never reached its INSERT")
