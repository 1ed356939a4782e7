"""Login storms: admission control under a flood (S5) and equal timing of failures (S6)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from quart import Quart, request
from redis.asyncio import Redis

from keystile.app import create_app
from keystile.container import Overrides
from keystile.errors import Overloaded
from keystile.services.passwords import Argon2Parameters, HashAdmission, PasswordHasher
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, login, services_of, unique_email
from tests.support.statements import Statements
from tests.support.waiting import eventually

# A budget of a few hash times: a flood of 50 logins must overflow it.
BUDGET_MS = 100

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
        login_wait_budget_ms=BUDGET_MS,
        db_pool_size=10,
        login_backoff_client_free_failures=1000,
        login_backoff_account_free_failures=1000,
        rate_limit_login_per_account="1000/minute",
        **OWASP_ARGON2,
    )
    hasher = HashCountingHasher(Argon2Parameters(), threads=2, budget=BUDGET_MS / 1000)
    app = create_app(settings, overrides=Overrides(hasher=hasher))
    try:
        async with app.test_app() as test_app:
            yield test_app  # type: ignore[misc]
    finally:
        hasher.close()


async def _insert_users(app: Quart, count: int, *, elsewhere: bool = False) -> list[str]:
    """Create accounts directly: one hash shared by all, so setup spends one hash, not `count`.

    `elsewhere`: that hash is made by a hasher of its own, so the app's learns no time.
    """
    services = services_of(app)
    if elsewhere:
        setup = PasswordHasher(Argon2Parameters(memory_kib=64, time_cost=1), threads=1, budget=1)
        try:
            password_hash = await setup.hash(PASSWORD)
        finally:
            setup.close()
    else:
        password_hash = await services.hasher.hash(PASSWORD)
    emails = [unique_email() for _ in range(count)]
    assert len(await services.users.insert_users([(e, password_hash) for e in emails])) == count
    return emails


@pytest.mark.slow
async def test_login_flood_sheds_load_fast_and_keeps_the_loop_answering(
    costly_app: Quart,
) -> None:
    # S5: 2 hashing threads and a 100 ms wait budget; 50 different accounts log in at once.
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
    assert shed, "a 100 ms budget must turn some of 50 simultaneous logins away"
    assert len(succeeded) >= 2, "both hashing threads should have been used"
    for latency, response in shed:
        assert int(response.headers["Retry-After"]) >= 1
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


async def test_unknown_user_wrong_password_and_disabled_account_each_cost_one_verification(
    backing: Backing,
) -> None:
    # S6: what makes their times equal, counted rather than timed: each failure runs
    # exactly one verification on the hashing threads, and all answer the same body.
    hasher = HashCountingHasher(Argon2Parameters(memory_kib=64, time_cost=1), threads=2, budget=1)
    app = create_app(make_settings(backing), overrides=Overrides(hasher=hasher))
    try:
        async with app.test_app() as test_app:
            known, disabled = await _insert_users(test_app, 2)
            await services_of(test_app).admin.disable_user(disabled)
            client = test_app.test_client()
            bodies = set()
            for email, password in (
                (unique_email(), PASSWORD),
                (known, "not the password at all"),
                (disabled, PASSWORD),
            ):
                ran_before = hasher.ran
                response = await login(client, email, password)
                assert response.status_code == 401
                assert hasher.ran == ran_before + 1, email
                bodies.add(await response.get_data())
            assert len(bodies) == 1
    finally:
        hasher.close()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
async def test_hashing_threads_run_at_the_event_loops_cpu_priority() -> None:
    # A niced hashing thread loses the CPU to the loops answering 503s, which starves the
    # very work that drains the queue (issue 12): hashing runs at normal priority.
    def niceness_of_threads() -> set[int]:
        # Field 19 of /proc/<pid>/task/<tid>/stat is the task's nice value.
        values = set()
        for stat in Path("/proc/self/task").glob("*/stat"):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            values.add(int(fields[16]))
        return values

    hasher = PasswordHasher(Argon2Parameters(memory_kib=64, time_cost=1), threads=1, budget=1.0)
    try:
        await hasher.hash("a password to hash")  # starts the pool's thread
        assert niceness_of_threads() == {os.getpriority(os.PRIO_PROCESS, 0)}
    finally:
        hasher.close()


def test_admission_refuses_past_the_wait_budget_with_a_retry_after_that_grows() -> None:
    # S5: 2 threads, 100 ms per hash, a 1 s budget: a hash waits (ahead x 0.1 / 2) s.
    now = [1000.0]
    admission = HashAdmission(threads=2, budget=1.0, mean_hash_seconds=0.1, clock=lambda: now[0])
    admitted = 0
    while admission.expected_wait() <= 1.0:
        admission.admit()
        admitted += 1
    assert admitted == 22  # 2 running at once, 20 more waiting at most 1 s
    retry_afters = []
    for _ in range(50):
        with pytest.raises(Overloaded) as refused:
            admission.admit()
        retry_afters.append(refused.value.retry_after)
    # Each refusal is told a later turn, spaced by the drain rate (20/s): 50 refusals
    # spread over 2.5 s, not all sent back for the same second.
    assert retry_afters == sorted(retry_afters)
    assert retry_afters[:19] == [1] * 19  # turns 0.05 .. 0.95 s from now
    assert retry_afters[21:39] == [2] * 18  # turns 1.1 .. 1.95 s
    assert retry_afters[-1] == 3  # turn 2.5 s
    # Once hashes finish, the queue is open again.
    for _ in range(5):
        admission.release()
    admission.admit()


def test_retry_after_stays_within_the_horizon_when_refused_clients_come_back_early() -> None:
    # Clients that ignore Retry-After (or give up) are promised new turns each time they
    # are refused; the schedule must not run away into minutes.
    now = [1000.0]
    admission = HashAdmission(threads=1, budget=1.0, mean_hash_seconds=0.1, clock=lambda: now[0])
    while admission.expected_wait() <= 1.0:
        admission.admit()
    retry_afters = []
    for _ in range(5000):
        with pytest.raises(Overloaded) as refused:
            admission.admit()
        retry_afters.append(refused.value.retry_after)
    assert max(retry_afters) <= 1 + 10  # excess wait + the 10 s horizon
    assert retry_afters[:9] == [1] * 9  # the first ones are still told the earliest turns


def test_each_earlier_cold_attempt_stretches_the_budget_by_a_third_up_to_twice_it() -> None:
    admission = HashAdmission(threads=1, budget=0.9, mean_hash_seconds=0.1)
    budgets = [admission.budget_for(attempt) for attempt in (0, 1, 2, 3, 4, 5, 50)]
    assert budgets == pytest.approx([0.9, 0.9, 1.2, 1.5, 1.8, 1.8, 1.8])


def test_admission_learns_the_hash_time_it_measures() -> None:
    admission = HashAdmission(threads=1, budget=1.0, mean_hash_seconds=0.01)
    for _ in range(200):
        admission.observe(0.5)
    assert admission.mean_hash_seconds == pytest.approx(0.5, rel=0.01)
    assert admission.capacity_per_second == pytest.approx(2.0, rel=0.01)


def test_turns_are_promised_at_the_cpu_rate_while_admission_keeps_to_the_wall_time() -> None:
    # S5: while the event loop answers a flood, a hash takes 0.2 s of wall time for
    # 0.1 s of CPU. Admission counts the wall time (an admitted wait stays in budget);
    # promised turns follow the CPU time, the rate the queue drains once the flood is
    # answered, so refused clients are not sent away for twice as long as needed.
    now = [1000.0]
    admission = HashAdmission(threads=1, budget=1.0, mean_hash_seconds=0.1, clock=lambda: now[0])
    for _ in range(200):
        admission.observe(0.2, cpu_seconds=0.1)
    admitted = 0
    while admission.expected_wait() <= 1.0:
        admission.admit()
        admitted += 1
    assert admitted == 6  # 1 running, 5 waiting 0.2 s each
    retry_afters = []
    for _ in range(30):
        with pytest.raises(Overloaded) as refused:
            admission.admit()
        retry_afters.append(refused.value.retry_after)
    # 30 turns 0.1 s apart (CPU rate), from the moment the queue is within budget by CPU
    # time: all within 3 s; by the wall time they would have reached 6 s.
    assert retry_afters == sorted(retry_afters)
    assert max(retry_afters) == 3


class GatedHasher(PasswordHasher):
    """A real hasher whose verifications wait until the test opens the gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.started = threading.Event()

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        self.started.set()
        self.gate.wait(timeout=30)
        return super()._verify_sync(password_hash, password)


async def test_warm_logins_pass_while_cold_logins_are_refused_for_hash_capacity(
    backing: Backing,
) -> None:
    # S5: while the only hashing thread is busy and the budget is spent, a cold login
    # gets 503 at once, but a login whose credentials are cached needs no hash and passes.
    settings = make_settings(backing, hash_threads=1, login_wait_budget_ms=0)
    hasher = GatedHasher(Argon2Parameters(memory_kib=64, time_cost=1), threads=1, budget=0.0)
    hasher.gate.set()
    app = create_app(settings, overrides=Overrides(hasher=hasher))
    try:
        async with app.test_app() as test_app:
            client = test_app.test_client()
            warm, cold, busy = await _insert_users(test_app, 3)
            assert (await login(client, warm)).status_code == 201  # now cached
            hasher.gate.clear()
            hasher.started.clear()
            holding = asyncio.ensure_future(login(client, busy))
            await asyncio.get_running_loop().run_in_executor(None, hasher.started.wait, 10)
            refused = await login(client, cold)
            assert refused.status_code == 503
            assert (await refused.get_json())["error"]["code"] == "overloaded"
            assert int(refused.headers["Retry-After"]) >= 1
            assert (await login(client, warm)).status_code == 201
            hasher.gate.set()
            assert (await holding).status_code == 201
            assert (await login(client, cold)).status_code == 201
    finally:
        hasher.gate.set()
        hasher.close()


async def _grant(client: Any, email: str, **body: Any) -> Any:
    return await client.post("/v1/tokens", json={"email": email, "password": PASSWORD, **body})


@contextlib.asynccontextmanager
async def _saturable_app(
    backing: Backing,
    *,
    before_request: Callable[[], Awaitable[None]] | None = None,
    budget: float = 0.0,
    mean_hash_seconds: float | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[Quart, GatedHasher]]:
    # One hashing thread, no wait budget: while one hash is held, every cold login is
    # refused. `before_request` runs before each request Quart handles.
    hasher = GatedHasher(
        Argon2Parameters(memory_kib=64, time_cost=1),
        threads=1,
        budget=budget,
        mean_hash_seconds=mean_hash_seconds,
    )
    hasher.gate.set()
    app = create_app(
        make_settings(backing, hash_threads=1, login_wait_budget_ms=0, **settings),
        overrides=Overrides(hasher=hasher),
    )
    if before_request is not None:
        app.before_request(before_request)
    try:
        async with app.test_app() as test_app:
            yield test_app, hasher  # type: ignore[misc]
    finally:
        hasher.gate.set()
        hasher.close()


@pytest.fixture(name="saturated")
async def _saturated(backing: Backing) -> AsyncIterator[tuple[Quart, GatedHasher, list[str]]]:
    # `seen` lists the password grants that reached Quart's handlers. The per-address
    # limit of grants is the tightest and refills too slowly to move during a test, so
    # RateLimit-Remaining counts the charges.
    seen: list[str] = []

    async def count() -> None:
        if request.path == "/v1/tokens":
            seen.append(request.method)

    async with _saturable_app(
        backing,
        before_request=count,
        rate_limit_token_per_ip="100/day",
        rate_limit_token_per_account="1000/day",
    ) as (app, hasher):
        yield app, hasher, seen


async def _hold_the_only_thread(client: Any, hasher: GatedHasher, email: str) -> Any:
    hasher.gate.clear()
    hasher.started.clear()
    holding = asyncio.ensure_future(login(client, email))
    await asyncio.get_running_loop().run_in_executor(None, hasher.started.wait, 10)
    return holding


async def test_a_cold_password_grant_refused_for_capacity_is_answered_in_front_of_quart(
    saturated: tuple[Quart, GatedHasher, list[str]],
) -> None:
    # S5: while hashing is saturated, a cold password grant's 503 is sent by the ASGI
    # layer, with the same body and headers as Quart's 503 for a browser login.
    app, hasher, seen = saturated
    client = app.test_client()
    cold, busy = await _insert_users(app, 2)
    holding = await _hold_the_only_thread(client, hasher, busy)
    refused = await _grant(client, cold)
    by_quart = await login(client, cold)  # /v1/sessions: always through Quart
    hasher.gate.set()
    assert (await holding).status_code == 201
    assert seen == []
    assert refused.status_code == by_quart.status_code == 503
    assert await refused.get_data() == await by_quart.get_data()
    assert (await refused.get_json())["error"]["code"] == "overloaded"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["Cache-Control"] == "no-store"
    assert refused.headers["X-Request-ID"]
    same = ("Content-Type", "Content-Length", "Cache-Control", "X-Content-Type-Options")
    assert {h: refused.headers.get(h) for h in same} == {h: by_quart.headers.get(h) for h in same}
    assert hasher.admission.admitted == 0
    assert (await _grant(client, cold)).status_code == 200
    assert seen == ["POST"]


async def test_an_over_long_password_grant_is_a_clear_422_even_while_hashing_is_saturated(
    backing: Backing,
) -> None:
    # S1: over the maximum is a clear 422, judged before the gate and the hash admission,
    # so saturation cannot turn it into a 503 (S5).
    async with _saturable_app(backing, password_max_length=64) as (app, hasher):
        client = app.test_client()
        cold, busy = await _insert_users(app, 2)
        holding = await _hold_the_only_thread(client, hasher, busy)
        refused = await _grant(client, cold, password="p" * 65)
        hasher.gate.set()
        assert (await holding).status_code == 201
        assert refused.status_code == 422, await refused.get_data(as_text=True)
        assert (await refused.get_json())["error"]["code"] == "password_too_long"


async def test_cold_grants_arriving_together_past_the_budget_are_refused_in_front_of_quart(
    saturated: tuple[Quart, GatedHasher, list[str]],
) -> None:
    # S5: logins that arrive together, with no hash running yet, take their admission
    # in front of Quart too: the one the budget admits reaches the handler, the others
    # are refused before Quart sees them, not late, after a trip through the handler.
    app, hasher, seen = saturated
    client = app.test_client()
    emails = await _insert_users(app, 5)
    hasher.gate.clear()
    grants = [asyncio.ensure_future(_grant(client, email)) for email in emails]
    pending = set(grants)
    while len(pending) > 1:  # the refusals come while the one admitted hash is held
        done, pending = await asyncio.wait(pending, timeout=10, return_when="FIRST_COMPLETED")
        if not done:
            break
    hasher.gate.set()
    statuses = sorted(answer.status_code for answer in await asyncio.gather(*grants))
    assert statuses == [200, 503, 503, 503, 503]
    assert seen == ["POST"]
    assert hasher.admission.admitted == 0


async def test_a_login_refused_for_capacity_is_admitted_on_its_return_ahead_of_newcomers(
    backing: Backing,
) -> None:
    # S5: one hash held, each hash taken to last 1 s, a 0.9 s budget. A newcomer would
    # wait 1 s and is refused; the same login come back (its account's second cold
    # attempt) is admitted up to 1.2 s, while a newcomer after it is refused. No
    # attempt is admitted past twice the budget, however often it comes back.
    async with _saturable_app(
        backing,
        budget=0.9,
        mean_hash_seconds=1.0,
        rate_limit_token_per_ip="100/day",
        rate_limit_token_per_account="1000/day",
    ) as (app, hasher):
        client = app.test_client()
        returning, patient, newcomer, busy = await _insert_users(app, 4, elsewhere=True)
        holding = await _hold_the_only_thread(client, hasher, busy)
        assert (await _grant(client, returning)).status_code == 503
        assert (await _grant(client, patient)).status_code == 503
        admitted = asyncio.ensure_future(_grant(client, returning))
        await eventually(lambda: hasher.admission.admitted == 2)
        assert (await _grant(client, newcomer)).status_code == 503
        # Two hashes ahead now: 2 s, past twice the budget for any attempt.
        for _ in range(5):
            assert (await _grant(client, patient)).status_code == 503
        hasher.gate.set()
        assert (await holding).status_code == 201
        assert (await admitted).status_code == 200
        assert (await _grant(client, patient)).status_code == 200


async def test_an_accounts_cold_attempts_are_counted_until_a_success(backing: Backing) -> None:
    # What the gate's script counts for hash admission (S5): cold logins of the account,
    # failed or refused, until one succeeds; a warm login (cached success) is not one.
    async with _saturable_app(
        backing, rate_limit_token_per_ip="100/day", rate_limit_token_per_account="1000/day"
    ) as (app, _):
        client = app.test_client()
        (email,) = await _insert_users(app, 1, elsewhere=True)
        key = services_of(app).throttle.attempts_key(email.lower())
        redis = Redis.from_url(backing.redis_url)
        try:
            for expected in (1, 2):
                assert (await _grant(client, email, password="not the password")).status_code == 401
                assert int(await redis.get(key) or 0) == expected
            assert 0 < await redis.pttl(key) <= 20_000  # twice the turns' 10 s horizon
            assert (await _grant(client, email)).status_code == 200
            assert await redis.exists(key) == 0
            assert (await _grant(client, email)).status_code == 200  # warm
            assert await redis.exists(key) == 0
            # A cold success clears its own count too (the credential entry made cold).
            await redis.delete(services_of(app).credentials.redis_key(email.lower()) or "")
            assert (await _grant(client, email)).status_code == 200
            assert await redis.exists(key) == 0
        finally:
            await redis.aclose()


async def test_logins_let_through_while_hashing_is_saturated_are_charged_once(
    saturated: tuple[Quart, GatedHasher, list[str]],
) -> None:
    # S5, S27: a warm password grant passes the ASGI layer with its gate already run;
    # the handler does not run the gate again, so each grant spends one request of the
    # per-address allowance, saturated or not.
    app, hasher, seen = saturated
    client = app.test_client()
    warm, busy = await _insert_users(app, 2)
    before = await _grant(client, warm)  # not saturated: hashed, and now cached
    holding = await _hold_the_only_thread(client, hasher, busy)
    first = await _grant(client, warm)
    second = await _grant(client, warm)
    hasher.gate.set()
    assert (await holding).status_code == 201
    assert before.status_code == first.status_code == second.status_code == 200
    remaining = [int(r.headers["RateLimit-Remaining"]) for r in (before, first, second)]
    assert remaining[0] - remaining[1] == remaining[1] - remaining[2] == 1
    assert seen == ["POST", "POST", "POST"]
    assert hasher.admission.admitted == 0


async def test_a_password_grant_it_cannot_judge_goes_to_quart_unchanged(
    saturated: tuple[Quart, GatedHasher, list[str]],
) -> None:
    # While hashing is saturated, a body that is not a valid password grant gets
    # exactly the answer it gets otherwise: Quart's, with its field messages.
    app, hasher, seen = saturated
    client = app.test_client()
    (busy,) = await _insert_users(app, 1)
    bad_bodies: list[dict[str, Any]] = [
        {"json": {"email": "not-an-email", "password": PASSWORD}},
        {"json": {"email": unique_email()}},
        {"json": {"email": unique_email(), "password": PASSWORD, "scope": "no-such-scope"}},
        {"data": b'{"email": ', "headers": {"Content-Type": "application/json"}},
        {"form": {"email": unique_email(), "password": PASSWORD}},
    ]
    calm = [await client.post("/v1/tokens", **body) for body in bad_bodies]
    holding = await _hold_the_only_thread(client, hasher, busy)
    during = [await client.post("/v1/tokens", **body) for body in bad_bodies]
    hasher.gate.set()
    assert (await holding).status_code == 201
    for before, now in zip(calm, during, strict=True):
        assert 400 <= now.status_code < 500
        assert now.status_code == before.status_code
        assert await now.get_json() == await before.get_json()
    assert len(seen) == 2 * len(bad_bodies)
    assert hasher.admission.admitted == 0


async def test_with_the_credential_cache_off_a_refused_login_costs_no_postgresql_work(
    backing: Backing,
) -> None:
    # S5: with nothing ever cached, every login is cold, so its hash is admitted (or
    # refused) right after the login gate, before the user is looked up.
    async with _saturable_app(backing, credential_cache_ttl_seconds=0) as (app, hasher):
        client = app.test_client()
        cold, busy = await _insert_users(app, 2)
        holding = await _hold_the_only_thread(client, hasher, busy)
        statements = Statements()
        await statements.observe(services_of(app).database.pool)
        by_session = await login(client, cold)
        by_token = await _grant(client, cold)
        during = list(statements.seen)
        hasher.gate.set()
        assert (await holding).status_code == 201
        assert by_session.status_code == by_token.status_code == 503
        assert during == []
