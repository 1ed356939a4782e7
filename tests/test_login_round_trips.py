"""A login costs one Redis call before its password is looked at, and one PostgreSQL write.

Counted on the real servers: Redis by `INFO commandstats`, PostgreSQL by asyncpg's
query loggers on every pooled connection (issue 12).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
from quart import Quart
from redis.asyncio import Redis

from keystile.app import create_app
from keystile.container import Overrides
from keystile.embedded import EmbeddedRedis
from tests.support.backing import Backing, make_settings
from tests.support.http import (
    PASSWORD,
    Client,
    from_ip,
    login,
    register,
    services_of,
    unique_email,
    unique_ip,
)
from tests.support.round_trips import round_trips
from tests.support.statements import Statements

_MARK = "keystile-test-mark"


async def _commands_during(redis: Redis, action: Awaitable[object]) -> Counter[str]:
    """Return the commands clients sent to Redis while `action` ran (not those in scripts).

    Read with MONITOR, between two marker commands this test sends itself.
    """
    seen: Counter[str] = Counter()
    async with redis.monitor() as monitor:
        await redis.echo(_MARK)
        started = False
        await action
        await redis.echo(_MARK)
        while True:
            info = await monitor.next_command()
            command = info["command"]
            if info["client_type"] == "lua":
                continue  # run inside a script: part of that one call
            if command == f"ECHO {_MARK}":
                if started:
                    return seen
                started = True
            elif started and command.split()[0].upper() not in _BACKGROUND:
                seen[command.split()[0].lower()] += 1


# What connections send by themselves (handshakes, health checks), not the login.
_BACKGROUND = {"PING", "INFO", "CLIENT", "HELLO"}


def _creds(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD}


async def _load_the_scripts(client: Client) -> None:
    """Log another account in, and fail once, so Redis has the login's scripts cached.

    A fresh Redis answers a script's first EVALSHA with NOSCRIPT (redis-py then loads
    it): round trips counted on the first login of a test run would include those.
    """
    email = unique_email()
    await register(client, email)
    assert (await client.post("/v1/tokens", json=_creds(email))).status_code == 200
    assert (await login(client, email, "not the password")).status_code == 401


@pytest.fixture(name="quiet_app")
async def _quiet_app(backing: Backing) -> AsyncIterator[Quart]:
    # No background loops that would touch the stores while commands are counted.
    settings = make_settings(backing, housekeeping_interval_seconds=0)
    app = create_app(settings, overrides=Overrides())
    async with app.test_app() as test_app:
        yield test_app  # type: ignore[misc]


async def test_a_warm_login_from_a_known_address_is_one_redis_call(
    quiet_app: Quart, backing: Backing
) -> None:
    client = quiet_app.test_client()
    email, ip = unique_email(), unique_ip()
    await register(client, email)
    assert (
        await client.post("/v1/sessions", json=_creds(email), **from_ip(ip))
    ).status_code == 201  # cold; now known
    redis = Redis.from_url(backing.redis_url)
    try:
        used = await _commands_during(
            redis, client.post("/v1/sessions", json=_creds(email), **from_ip(ip))
        )
    finally:
        await redis.aclose()
    # Limits per address and per account, both backoffs, the known-client check and the
    # credential-cache read: one script call.
    assert used == Counter({"evalsha": 1}), used


@pytest.mark.slow
async def test_after_a_redis_outage_a_warm_login_is_one_redis_call_again(
    backing: Backing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S30: recovers without a restart: once Redis answers again the login gate is back to
    # its one script call, not the command-per-check path it takes while Redis is away.
    redis = EmbeddedRedis(tmp_path, persist=False)
    settings = make_settings(
        backing,
        redis_url=redis.start(),
        housekeeping_interval_seconds=0,
        rate_limit_redis_retry_seconds=0.2,
    )
    email, ip = unique_email(), unique_ip()
    try:
        async with create_app(settings).test_app() as app:
            client = app.test_client()
            await register(client, email)
            redis.stop()
            signed_in = await client.post("/v1/sessions", json=_creds(email), **from_ip(ip))
            assert signed_in.status_code == 201
            redis.start()  # again, on the port it had
            # The first logins after the restart load the scripts, cache the credential and
            # mark the address known again; a pooled connection the old server closed fails
            # once (fast) and sends the gate per process for its retry interval.
            for _ in range(20):
                await asyncio.sleep(1.2)  # past every retry interval (the caches' is 1 s)
                with round_trips(monkeypatch) as sent:
                    signed_in = await client.post("/v1/sessions", json=_creds(email), **from_ip(ip))
                assert signed_in.status_code == 201
                if sent == [["EVALSHA"]]:
                    break
            assert sent == [["EVALSHA"]], sent
    finally:
        redis.stop()


async def test_a_cold_login_checks_limits_backoff_and_cache_in_one_script_call(
    quiet_app: Quart, backing: Backing
) -> None:
    client = quiet_app.test_client()
    email = unique_email()
    await register(client, email)
    redis = Redis.from_url(backing.redis_url)
    try:
        used = await _commands_during(
            redis, client.post("/v1/sessions", json=_creds(email), **from_ip(unique_ip()))
        )
    finally:
        await redis.aclose()
    # No separate reads of limits, backoff, known clients or the user cache (GET/HGET/
    # EXISTS were seven calls before the hash): the gate's script read them all. After
    # it, in one pipeline (the round trips are counted below): the user-cache fill, the
    # credential entry, this address as a known client, the account's count of cold
    # attempts cleared (DEL) and (a first login from this address) the new-device marks,
    # two SET ... GET.
    assert used["hget"] == 0
    assert used["exists"] == 0
    assert used["get"] == 0, used
    assert used["evalsha"] <= 2, used
    assert sum(used.values()) <= 7, used


@pytest.mark.parametrize(
    ("path", "status"), [("/v1/sessions", 201), ("/v1/tokens", 200)], ids=["cookie", "token"]
)
async def test_a_login_writes_its_session_or_token_family_and_audit_event_in_one_statement(
    quiet_app: Quart, path: str, status: int
) -> None:
    client = quiet_app.test_client()
    email = unique_email()
    await register(client, email)
    body = {"email": email, "password": PASSWORD}
    assert (await client.post(path, json=body)).status_code == status  # warms the caches
    statements = Statements()
    await statements.observe(services_of(quiet_app).database.pool)
    assert (await client.post(path, json=body)).status_code == status
    assert len(statements.seen) == 1, statements.seen
    (statement,) = statements.seen
    assert "INSERT INTO audit_events" in statement
    assert ("INSERT INTO sessions" if status == 201 else "INSERT INTO refresh_tokens") in statement
    events = await services_of(quiet_app).audit_admin.tail(5, email)
    assert [event.kind for event in events][-1] == "login"


async def test_failed_logins_are_audited_in_batches_not_one_write_each(quiet_app: Quart) -> None:
    client = quiet_app.test_client()
    email = unique_email()
    await register(client, email)
    statements = Statements()
    await statements.observe(services_of(quiet_app).database.pool)
    for _ in range(3):
        assert (await login(client, email, "not the password")).status_code == 401
    audit_writes = [query for query in statements.seen if "audit_events" in query]
    assert audit_writes == [], "a failure alone must not cost a PostgreSQL write"
    events = await services_of(quiet_app).audit_admin.tail(10, email)
    assert [event.kind for event in events].count("login_failed") == 3


@pytest.mark.parametrize(
    ("path", "status"), [("/v1/sessions", 201), ("/v1/tokens", 200)], ids=["cookie", "token"]
)
async def test_a_cold_login_makes_two_redis_round_trips_the_gate_and_its_writes(
    quiet_app: Quart, monkeypatch: pytest.MonkeyPatch, path: str, status: int
) -> None:
    client = quiet_app.test_client()
    await _load_the_scripts(client)
    email = unique_email()
    await register(client, email)
    with round_trips(monkeypatch) as sent:
        response = await client.post(path, json=_creds(email), **from_ip(unique_ip()))
    assert response.status_code == status
    # The gate's script; then, in one pipeline, the user-cache fill (EVAL), the credential
    # entry (PSETEX), the account's count of cold attempts cleared (DEL), this address as
    # a known client and the two new-device marks (SET).
    assert sent[0] == ["EVALSHA"], sent
    assert Counter(sent[1]) == Counter({"EVAL": 1, "PSETEX": 1, "DEL": 1, "SET": 3}), sent
    assert len(sent) == 2, sent


async def test_the_writes_sent_together_are_read_by_the_next_login(
    quiet_app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = quiet_app.test_client()
    email, ip = unique_email(), unique_ip()
    await register(client, email)
    assert (await client.post("/v1/tokens", json=_creds(email), **from_ip(ip))).status_code == 200
    with round_trips(monkeypatch) as sent:
        response = await client.post("/v1/tokens", json=_creds(email), **from_ip(ip))
    assert response.status_code == 200
    # Known address, cached success, cached user: the gate's script is the only call.
    assert sent == [["EVALSHA"]], sent


async def test_a_wrong_password_makes_two_redis_round_trips_the_gate_and_its_counts(
    quiet_app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = quiet_app.test_client()
    await _load_the_scripts(client)
    email = unique_email()
    await register(client, email)
    with round_trips(monkeypatch) as sent:
        response = await login(client, email, "not the password")
    assert response.status_code == 401
    # The gate's script; then, in one pipeline, the user-cache fill and the failure
    # counted on both backoffs (the address's and the account's): three scripts.
    assert sent == [["EVALSHA"], ["EVAL", "EVAL", "EVAL"]], sent


async def test_a_refresh_charges_its_address_and_account_in_one_redis_call(
    quiet_app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S27 at no extra cost: the token names its account, so both limits are one script
    # call, with no known-client lookup (only a holder of the token can charge it).
    client = quiet_app.test_client()
    email = unique_email()
    await register(client, email)
    granted = await client.post("/v1/tokens", json=_creds(email))
    token = (await granted.get_json())["refresh_token"]
    warm = await client.post("/v1/tokens/refresh", json={"refresh_token": token})
    token = (await warm.get_json())["refresh_token"]  # the limits' script now loaded
    with round_trips(monkeypatch) as sent:
        response = await client.post("/v1/tokens/refresh", json={"refresh_token": token})
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert sent == [["EVALSHA"]], sent
