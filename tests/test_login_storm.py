"""Login storms: admission control under a flood (S5) and equal timing of failures (S6)."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from keystile.app import create_app
from keystile.container import Overrides
from keystile.services.passwords import Argon2Parameters, PasswordHasher
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, login, services_of, unique_email

# Production-strength hashing: these tests are about what hashing costs.
OWASP_ARGON2 = {"argon2_memory_kib": 19 * 1024, "argon2_time_cost": 2, "argon2_parallelism": 1}


class HashCountingHasher(PasswordHasher):
    """A real hasher that counts the verifications its threads actually ran."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.ran = 0

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        with self._lock:
            self.ran += 1
        return super()._verify_sync(password_hash, password)


@pytest.fixture(name="costly_app")
async def _costly_app(backing: Backing) -> AsyncIterator[Quart]:
    # Failed-login backoff and per-account limits are tested in test_login_throttle.py and
    # test_rate_limits.py; here they would turn repeated wrong passwords into 429s.
    settings = make_settings(
        backing,
        hash_threads=2,
        hash_queue_limit=4,
        db_pool_size=10,
        login_backoff_client_free_failures=1000,
        login_backoff_account_free_failures=1000,
        rate_limit_login_per_account="1000/minute",
        **OWASP_ARGON2,
    )
    hasher = HashCountingHasher(Argon2Parameters(), threads=2, queue_limit=4, retry_after=1)
    app = create_app(settings, overrides=Overrides(hasher=hasher))
    try:
        async with app.test_app() as test_app:
            yield test_app  # type: ignore[misc]
    finally:
        hasher.close()


async def _insert_users(app: Quart, count: int) -> list[str]:
    """Create accounts directly: one hash shared by all, so setup spends one hash, not `count`."""
    services = services_of(app)
    password_hash = await services.hasher.hash(PASSWORD)
    emails = [unique_email() for _ in range(count)]
    assert len(await services.users.insert_users([(e, password_hash) for e in emails])) == count
    return emails


@pytest.mark.slow
async def test_login_flood_sheds_load_fast_and_keeps_the_loop_answering(
    costly_app: Quart,
) -> None:
    # S5: 2 hashing threads + a 4-slot queue; 50 different accounts log in at once.
    emails = await _insert_users(costly_app, 50)
    hasher = services_of(costly_app).hasher
    assert isinstance(hasher, HashCountingHasher)
    ran_before = hasher.ran
    client = costly_app.test_client()
    flooding = True
    health_latencies: list[float] = []

    async def timed_login(email: str) -> tuple[int, float, Any]:
        started = time.perf_counter()
        response = await login(client, email)
        return response.status_code, time.perf_counter() - started, response

    async def probe_health() -> None:
        while flooding:
            started = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            health_latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    prober = asyncio.create_task(probe_health())
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(timed_login(email) for email in emails)), timeout=60
        )
    finally:
        flooding = False
        await prober

    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {201, 503}, statuses
    shed = [(latency, response) for status, latency, response in results if status == 503]
    succeeded = [latency for status, latency, _ in results if status == 201]
    assert shed, "a 4-slot queue must turn some of 50 simultaneous logins away"
    assert len(succeeded) >= 6, "every slot (2 running + 4 queued) should have been used"
    for latency, response in shed:
        assert response.headers["Retry-After"] == "1"
        assert (await response.get_json())["error"]["code"] == "overloaded"
        # Generous: on a loaded 2-CPU machine the user lookups of 50 requests queue up.
        assert latency < 5.0, f"a refused login took {latency:.2f} s: it should be immediate"
    assert hasher.ran - ran_before == len(succeeded), "a refused login must not spend a hash"
    assert max(succeeded) < 30, "an admitted login must finish, not time out"
    shed_median = statistics.median(latency for latency, _ in shed)
    assert health_latencies, "the health probe never ran"
    assert max(health_latencies) < 2.0, f"/healthz took {max(health_latencies):.2f} s"
    print(  # noqa: T201 - shown with -s, for whoever tunes the bounds
        f"shed {len(shed)} (median {shed_median:.3f} s), admitted {len(succeeded)} "
        f"(median {statistics.median(succeeded):.3f} s), /healthz max "
        f"{max(health_latencies):.3f} s over {len(health_latencies)} probes"
    )


@pytest.mark.slow
async def test_unknown_user_wrong_password_and_disabled_account_take_the_same_time(
    costly_app: Quart,
) -> None:
    # S6: same status, body and (statistically) time, with real argon2 parameters.
    known, disabled = await _insert_users(costly_app, 2)
    await services_of(costly_app).admin.disable_user(disabled)
    client = costly_app.test_client()
    samples: dict[str, list[float]] = {"unknown": [], "wrong": [], "disabled": []}
    bodies: dict[str, set[bytes]] = {kind: set() for kind in samples}
    attempts = [
        ("unknown", None, PASSWORD),
        ("wrong", known, "not the password at all"),
        ("disabled", disabled, PASSWORD),
    ]
    shuffler = random.Random(6)
    for _ in range(30):
        shuffler.shuffle(attempts)  # no kind always runs right after another
        for kind, email, password in attempts:
            started = time.perf_counter()
            response = await login(client, email or unique_email(), password)
            samples[kind].append(time.perf_counter() - started)
            assert response.status_code == 401
            bodies[kind].add(await response.get_data())
    assert len(bodies["unknown"] | bodies["wrong"] | bodies["disabled"]) == 1
    medians = {kind: statistics.median(values) for kind, values in samples.items()}
    # Without the dummy hash an unknown user answers ~20x faster; allow 1.5x for noise.
    assert max(medians.values()) < 1.5 * min(medians.values()), medians


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
async def test_hashing_threads_run_at_a_lower_cpu_priority() -> None:
    # Under a storm the event loops must win the CPU over hashing (fast 503s, reads).
    def niceness_of_threads() -> list[int]:
        # Field 19 of /proc/<pid>/task/<tid>/stat is the task's nice value.
        values = []
        for stat in Path("/proc/self/task").glob("*/stat"):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            values.append(int(fields[16]))
        return values

    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert base + 7 not in niceness_of_threads()
    hasher = PasswordHasher(
        Argon2Parameters(memory_kib=64, time_cost=1), threads=1, queue_limit=1, niceness=7
    )
    try:
        await hasher.hash("a password to hash")  # starts the pool's thread
        assert base + 7 in niceness_of_threads()
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # loop
    finally:
        hasher.close()
