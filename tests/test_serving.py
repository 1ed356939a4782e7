"""`keystile serve` as operators run it: workers share metrics, log JSON, and drain (S32)."""

from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import argon2
import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.backing import Backing
from tests.support.http import PASSWORD, unique_email
from tests.support.processes import start_server, wait_until_ready

pytestmark = pytest.mark.slow


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_add_up_over_workers_and_requests_are_logged_as_json(
    backing: Backing, tmp_path: Path
) -> None:
    server = start_server(backing, tmp_path, workers=2)
    try:
        wait_until_ready(server)
        # Each request on a new connection, so either worker may take it.
        for index in range(20):
            response = httpx.get(
                f"{server.base}/healthz", headers={"X-Request-ID": f"ops-{index}"}, timeout=10
            )
            assert response.status_code == 200
            assert response.headers["X-Request-ID"] == f"ops-{index}"
        metrics_dir = next((server.data_dir / "metrics").iterdir())
        # Both workers sampled their pools, so both have files in the shared directory.
        pids = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("gauge_livesum_*.db")}
        assert len(pids) == 2
        samples = _samples(httpx.get(f"{server.base}/metrics", timeout=10).text)
    finally:
        exit_code = server.stop()
    assert exit_code == 0

    healthz = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
    assert samples[("keystile_http_request_duration_seconds_count", healthz)] == 20
    # Two workers x a pool of 3: the scrape sums every live worker, not just its own.
    pool = sum(
        samples[("keystile_db_pool_connections", (("state", state),))]
        for state in ("idle", "in_use")
    )
    assert pool == 6
    assert not metrics_dir.exists()  # removed at exit

    lines = server.log_lines()  # every line parses as JSON
    requests = [line for line in lines if line.get("logger") == "keystile.request"]
    ids = {line["request_id"] for line in requests if line["route"] == "/healthz"}
    assert {f"ops-{index}" for index in range(20)} <= ids
    assert all({"method", "status", "duration_ms", "time"} <= set(line) for line in requests)


def _argon2_time_cost_for(seconds: float, memory_kib: int) -> int:
    """Return the argon2 time cost that makes one hash take about `seconds` here."""
    hasher = argon2.PasswordHasher(time_cost=20, memory_cost=memory_kib, parallelism=1)
    started = time.perf_counter()
    hasher.hash("calibration")
    per_iteration = (time.perf_counter() - started) / 20
    return max(20, math.ceil(seconds / per_iteration))


def test_sigterm_lets_in_flight_requests_finish_and_refuses_new_ones(
    backing: Backing, tmp_path: Path
) -> None:
    # S32: registrations that hash for ~5 s are in flight when SIGTERM arrives.
    memory_kib = 8192
    drain_delay = 1.0
    server = start_server(
        backing,
        tmp_path,
        workers=2,
        argon2_memory_kib=str(memory_kib),
        argon2_time_cost=str(_argon2_time_cost_for(5.0, memory_kib)),
        drain_delay_seconds=str(drain_delay),
    )
    results: list[tuple[int, float]] = []

    def register() -> None:
        body = {"email": unique_email(), "password": PASSWORD}
        response = httpx.post(f"{server.base}/v1/users", json=body, timeout=60)
        results.append((response.status_code, time.monotonic()))

    try:
        wait_until_ready(server)
        slow = [threading.Thread(target=register) for _ in range(2)]
        for thread in slow:
            thread.start()
        time.sleep(0.5)
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()

        # Draining: still answering, but /readyz says 503 so balancers move away.
        readiness: list[int] = []
        while time.monotonic() < signalled + drain_delay - 0.2:
            readiness.append(httpx.get(f"{server.base}/readyz", timeout=5).status_code)
            time.sleep(0.05)
        assert 503 in readiness
        assert set(readiness) <= {200, 503}

        # Then the listener closes: new connections are refused, not queued or failed.
        # A connection made in the instant it closes can be reset unanswered (the kernel
        # had queued it); the very next one must then be refused.
        refused_at = None
        reset = False
        while refused_at is None and time.monotonic() < signalled + 15:
            try:
                status = httpx.get(f"{server.base}/healthz", timeout=5).status_code
                assert status == 200
                assert not reset, "a connection was reset while the listener was open"
            except httpx.ConnectError:
                refused_at = time.monotonic()
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # The reset shows as either, by whether it came before or after the request
                # was written (ECONNRESET on the read: httpx's ReadError).
                assert not reset, "connections were reset, not refused"
                reset = True
                continue
            time.sleep(0.05)
        assert refused_at is not None, "new connections were still accepted"

        for thread in slow:
            thread.join(timeout=60)
        exit_code = server.process.wait(timeout=60)
    finally:
        server.stop()

    assert [status for status, _ in results] == [202, 202]
    # They were still running when the listener closed, and finished anyway.
    assert all(finished > refused_at for _, finished in results)
    assert exit_code == 0
    statuses = [
        (line["route"], line["status"])
        for line in server.log_lines()
        if line.get("logger") == "keystile.request"
    ]
    assert ("/v1/users", 202) in statuses
    assert all(status < 500 for route, status in statuses if route != "/readyz")


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(
    backing: Backing, tmp_path: Path
) -> None:
    server = start_server(backing, tmp_path, workers=2)
    try:
        wait_until_ready(server)
        server.signal(signal.SIGKILL)  # the supervisor only: its workers are orphaned
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{server.base}/healthz", timeout=2)
            except httpx.ConnectError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("orphaned workers kept serving")
    finally:
        server.stop()


def test_every_answered_login_has_its_audit_event_after_sigterm_mid_storm(
    backing: Backing, tmp_path: Path
) -> None:
    # Issue 12: successful logins commit their event with their session or token family;
    # failed ones are batched, and the batch is written on SIGTERM before the worker exits.
    server = start_server(backing, tmp_path, workers=2, drain_delay_seconds="0.5")
    accounts = [unique_email() for _ in range(12)]
    answers: list[tuple[str, str, int]] = []  # (email, kind sent, status)
    lock = threading.Lock()
    stop = threading.Event()

    def storm(email: str) -> None:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            attempt = 0
            while not stop.is_set():
                wrong = attempt % 2 == 1
                password = "not the password at all" if wrong else PASSWORD
                try:
                    response = client.post(
                        "/v1/tokens" if attempt % 3 else "/v1/sessions",
                        json={"email": email, "password": password},
                    )
                except httpx.HTTPError:
                    return  # the listener closed: nothing was acknowledged
                with lock:
                    answers.append((email, "wrong" if wrong else "right", response.status_code))
                attempt += 1

    try:
        wait_until_ready(server)
        with httpx.Client(base_url=server.base, timeout=30) as client:
            for email in accounts:
                registered = client.post("/v1/users", json={"email": email, "password": PASSWORD})
                assert registered.status_code == 202
        threads = [threading.Thread(target=storm, args=(email,)) for email in accounts]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        server.signal(signal.SIGTERM)
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()

    succeeded = Counter(email for email, _, status in answers if status in (200, 201))
    failed = Counter(email for email, _, status in answers if status == 401)
    assert sum(succeeded.values()) > 0
    assert sum(failed.values()) > 0

    async def recorded() -> tuple[Counter[str], Counter[str]]:
        connection = await asyncpg.connect(backing.database_url)
        try:
            rows = await connection.fetch(
                "SELECT u.email, e.kind FROM audit_events e JOIN users u ON u.id = e.user_id "
                "WHERE u.email = ANY($1::text[]) AND e.kind IN ('login', 'login_failed')",
                accounts,
            )
        finally:
            await connection.close()
        logins = Counter(row["email"] for row in rows if row["kind"] == "login")
        failures = Counter(row["email"] for row in rows if row["kind"] == "login_failed")
        return logins, failures

    logins, failures = asyncio.run(recorded())
    for email in accounts:
        assert logins[email] >= succeeded[email], email
        assert failures[email] >= failed[email], email
