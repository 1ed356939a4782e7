"""The credential cache and the user-by-email cache on the login path (hot path 2)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from quart import Quart

from keystile.app import create_app
from keystile.bootstrap import build_hasher
from keystile.container import Overrides
from keystile.embedded import EmbeddedRedis
from keystile.services.passwords import HashTicket, PasswordHasher
from keystile.settings import Settings
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

NEW_PASSWORD = "an entirely new passphrase"


class CountingHasher(PasswordHasher):
    """A real hasher that counts how often it verifies a password."""

    verifications = 0

    async def verify(
        self, password_hash: str, password: str, *, ticket: HashTicket | None = None
    ) -> bool:
        self.verifications += 1
        return await super().verify(password_hash, password, ticket=ticket)


def _counting_hasher(settings: Settings) -> CountingHasher:
    real = build_hasher(settings)
    real.close()
    return CountingHasher(
        real.parameters,
        threads=settings.hash_thread_count,
        budget=settings.hashing.login_wait_budget_ms / 1000,
    )


@pytest.fixture(name="hasher")
def _hasher(settings: Settings) -> Iterator[CountingHasher]:
    hasher = _counting_hasher(settings)
    yield hasher
    hasher.close()


@pytest.fixture(name="counted_app")
async def _counted_app(settings: Settings, hasher: CountingHasher) -> AsyncIterator[Quart]:
    app = create_app(settings, overrides=Overrides(hasher=hasher))
    async with app.test_app() as test_app:
        yield test_app  # type: ignore[misc]


async def _change_password(client: Client, current: str, new: str) -> int:
    response = await client.post(
        "/v1/me/password", json={"current_password": current, "new_password": new}
    )
    return response.status_code


async def test_repeat_login_skips_the_hash(counted_app: Quart, hasher: CountingHasher) -> None:
    client = counted_app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    after_first = hasher.verifications
    assert after_first == 1
    for _ in range(3):
        assert (await login(counted_app.test_client(), email)).status_code == 201
    assert hasher.verifications == after_first, "a cached success must not hash again"


async def test_credential_cache_hits_and_misses_are_counted(
    counted_app: Quart, hasher: CountingHasher
) -> None:
    def count(result: str) -> float:
        sample = REGISTRY.get_sample_value(
            "keystile_cache_lookups_total", {"cache": "credentials", "result": result}
        )
        return sample or 0.0

    client = counted_app.test_client()
    email = unique_email()
    await register(client, email)
    hits, misses = count("hit"), count("miss")
    assert (await login(client, email)).status_code == 201  # hashed: a miss
    assert (await login(client, email)).status_code == 201  # from the cache: a hit
    assert (count("hit") - hits, count("miss") - misses) == (1, 1)


async def test_wrong_password_after_a_cached_success_is_still_refused(
    counted_app: Quart, hasher: CountingHasher
) -> None:
    client = counted_app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    before = hasher.verifications
    refused = await login(client, email, "not the password at all")
    assert refused.status_code == 401
    assert hasher.verifications == before + 1, "a wrong password must take the slow path"
    # The failure was not cached and did not evict the good entry.
    assert (await login(client, email)).status_code == 201
    assert (await login(client, email, "not the password at all")).status_code == 401
    assert hasher.verifications == before + 2


async def test_password_change_makes_the_cached_old_password_useless(
    counted_app: Quart, hasher: CountingHasher
) -> None:
    client = counted_app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    assert (await login(counted_app.test_client(), email)).status_code == 201  # cached now
    assert await _change_password(client, PASSWORD, NEW_PASSWORD) == 204
    assert (await login(counted_app.test_client(), email)).status_code == 401
    assert (await login(counted_app.test_client(), email, NEW_PASSWORD)).status_code == 201


async def test_concurrent_cold_logins_of_one_user_run_one_hash(
    counted_app: Quart, hasher: CountingHasher
) -> None:
    email = unique_email()
    await register(counted_app.test_client(), email)
    before = hasher.verifications
    responses = await asyncio.gather(*(login(counted_app.test_client(), email) for _ in range(10)))
    assert [r.status_code for r in responses] == [201] * 10
    assert hasher.verifications == before + 1


async def test_disable_is_seen_by_the_next_login_despite_the_caches(
    counted_app: Quart,
) -> None:
    # S10 / S6: the cached user and the cached credential must not let a disabled account in.
    email = unique_email()
    await register(counted_app.test_client(), email)
    assert (await login(counted_app.test_client(), email)).status_code == 201
    assert (await login(counted_app.test_client(), email)).status_code == 201
    await services_of(counted_app).admin.disable_user(email)
    assert (await login(counted_app.test_client(), email)).status_code == 401


async def test_user_cache_entries_in_redis_are_sealed_and_forgeries_ignored(
    counted_app: Quart,
) -> None:
    services = services_of(counted_app)
    email = unique_email()
    await register(counted_app.test_client(), email)
    assert (await login(counted_app.test_client(), email)).status_code == 201
    key = services.users.shared_key(email)
    stored = await services.redis.get(key)
    assert stored is not None
    assert b"argon2" not in stored
    assert email.encode() not in stored
    # Someone with Redis access plants a record; keystile must not believe it.
    await services.redis.set(key, '"forged"')
    services.caches.forget_all()  # as after a reconnection: the next read goes to Redis
    assert (await login(counted_app.test_client(), email)).status_code == 201


async def test_redis_key_names_hold_no_email_or_client_address(counted_app: Quart) -> None:
    # Counters and caches of an account are named by keyed hashes (docs/scaling.md).
    services = services_of(counted_app)
    email = unique_email().replace("@", "+Mixed.Case@")
    ip = unique_ip()
    await register(counted_app.test_client(), email)
    for password in (PASSWORD, "not the password at all", PASSWORD):
        await counted_app.test_client().post(
            "/v1/sessions", json={"email": email, "password": password}, **from_ip(ip)
        )
    assert await services.redis.exists(services.users.shared_key(email))
    names = [key async for key in services.redis.scan_iter(count=1000)]
    leaked = [key for key in names if email.lower().encode() in key.lower() or ip.encode() in key]
    assert leaked == []


async def test_a_user_copy_read_by_the_login_gate_is_the_cached_user(counted_app: Quart) -> None:
    # The gate reads the user-cache entry in its script; the login uses it without a
    # Redis read of its own, and a forged entry is still refused by its seal.
    services = services_of(counted_app)
    email = unique_email()
    await register(counted_app.test_client(), email)
    assert (await login(counted_app.test_client(), email)).status_code == 201
    services.caches.forget_all()  # no local copy: the gate's read is the only one
    assert (await login(counted_app.test_client(), email)).status_code == 201
    await services.redis.set(services.users.shared_key(email), '"forged"')
    services.caches.forget_all()
    assert (await login(counted_app.test_client(), email)).status_code == 201
    assert (await login(counted_app.test_client(), email, NEW_PASSWORD)).status_code == 401


async def test_password_change_on_one_worker_reaches_the_cache_of_another(
    settings: Settings,
) -> None:
    first, second = create_app(settings), create_app(settings)
    async with first.test_app() as app_a, second.test_app() as app_b:
        await services_of(app_a).caches.ready.wait()
        email = unique_email()
        await register(app_a.test_client(), email)
        assert (await login(app_a.test_client(), email)).status_code == 201
        assert (await login(app_a.test_client(), email)).status_code == 201  # A has it cached
        on_b = app_b.test_client()
        assert (await login(on_b, email)).status_code == 201
        assert await _change_password(on_b, PASSWORD, NEW_PASSWORD) == 204
        deadline = time.monotonic() + 2.0
        while (await login(app_a.test_client(), email)).status_code != 401:
            assert time.monotonic() < deadline, "worker A still accepts the old password"
            await asyncio.sleep(0.05)
        assert (await login(app_a.test_client(), email, NEW_PASSWORD)).status_code == 201


async def test_logins_work_while_redis_is_stopped(backing: Backing, tmp_path: Path) -> None:
    # S30: Redis down costs the cache, not the login; no 500s, no long waits.
    redis = EmbeddedRedis(tmp_path, persist=False)
    settings = make_settings(backing, redis_url=redis.start())
    hasher = _counting_hasher(settings)
    app = create_app(settings, overrides=Overrides(hasher=hasher))
    try:
        async with app.test_app() as test_app:
            email = unique_email()
            await register(test_app.test_client(), email)
            assert (await login(test_app.test_client(), email)).status_code == 201
            redis.stop()
            for password, expected in ((PASSWORD, 201), ("wrong password!", 401), (PASSWORD, 201)):
                started = time.perf_counter()
                response = await login(test_app.test_client(), email, password)
                elapsed = time.perf_counter() - started
                assert response.status_code == expected, await response.get_data(as_text=True)
                # One Redis deadline (0.5 s) at most, plus a cheap hash and PostgreSQL.
                assert elapsed < 1.5, f"login took {elapsed:.2f} s with Redis down"
            unknown = await login(test_app.test_client(), unique_email())
            assert unknown.status_code == 401
    finally:
        redis.stop()
        hasher.close()
