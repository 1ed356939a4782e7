"""The `keystile` command: serve with the embedded default, and account administration."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pyotp
import pytest
from quart import Quart
from redis import Redis

from keystile.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from keystile.runtime import runtime
from keystile.services.paging import encode_cursor
from keystile.settings import Settings
from tests.support.backing import Backing
from tests.support.http import (
    PASSWORD,
    Client,
    eventually_status,
    login,
    register,
    services_of,
    unique_email,
)

ROOT = Path(__file__).resolve().parents[1]
KEYSTILE = [sys.executable, "-m", "keystile"]
CLI_TIMEOUT_S = 60


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update(
        KEYSTILE_SETTINGS_FILE=str(ROOT / "settings.toml"),
        KEYSTILE_ARGON2_MEMORY_KIB="64",
        KEYSTILE_ARGON2_TIME_COST="1",
        KEYSTILE_ARGON2_ALLOW_WEAK="true",
        **extra,
    )
    return env


def _run(
    backing: Backing, *args: str, stdin: str = "", secret: str = "k" * 40
) -> subprocess.CompletedProcess[str]:
    # `secret`: the deployment's secret key; the servers' caches are named with it.
    env = _env(
        KEYSTILE_DATABASE_URL=backing.database_url,
        KEYSTILE_REDIS_URL=backing.redis_url,
        KEYSTILE_SECRET_KEY=secret,
    )
    # -X faulthandler: a command stuck past the timeout is sent SIGABRT and prints every
    # thread's stack, so a hang shows where it waits instead of only that it did.
    child = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "keystile", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        stdout, stderr = child.communicate(stdin, timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        sessions = _database_sessions(backing.database_url)
        child.send_signal(signal.SIGABRT)
        stdout, stderr = child.communicate()
        pytest.fail(
            f"`keystile {' '.join(args)}` ran past {CLI_TIMEOUT_S} s.\n"
            f"PostgreSQL sessions then:\n{sessions}\nits stderr:\n{stderr[-8000:]}"
        )
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def _database_sessions(database_url: str) -> str:
    """What every session of the test database was doing, and which locks wait."""

    async def look() -> str:
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT a.pid, a.state, a.wait_event_type, a.wait_event,"
                " now() - a.xact_start AS in_transaction, left(a.query, 120) AS query,"
                " (SELECT string_agg(l.locktype || ' ' || l.mode, ', ') FROM pg_locks l"
                "  WHERE l.pid = a.pid AND NOT l.granted) AS waiting_for"
                " FROM pg_stat_activity a WHERE a.datname = current_database()"
                " AND a.pid <> pg_backend_pid()"
            )
        finally:
            await connection.close()
        return "\n".join(str(dict(row)) for row in rows) or "(no other session)"

    found: list[str] = []
    # In a thread of its own: a test's event loop may be running in this one.
    looker = threading.Thread(target=lambda: found.append(asyncio.run(look())))
    looker.start()
    looker.join(20)
    return found[0] if found else "(PostgreSQL did not answer within 20 s)"


async def _run_aside(
    backing: Backing, *args: str, stdin: str = "", secret: str = "k" * 40
) -> subprocess.CompletedProcess[str]:
    """`_run` for async tests: the app under test keeps serving while the command runs."""
    return await asyncio.to_thread(_run, backing, *args, stdin=stdin, secret=secret)


def test_user_create_list_disable(backing: Backing) -> None:
    email = unique_email()
    created = _run(backing, "user", "create", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert email in created.stdout

    listed = _run(backing, "user", "list", "--after", email[:-1], "--limit", "1")
    assert listed.returncode == 0, listed.stderr
    assert email in listed.stdout
    assert "active" in listed.stdout

    again = _run(backing, "user", "create", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 2
    # Only the answer: a command sends no mail, so it says nothing of where mail goes.
    assert again.stderr.splitlines() == [f"keystile: An account for {email} already exists."]

    disabled = _run(backing, "user", "disable", email)
    assert disabled.returncode == 0, disabled.stderr
    assert "disabled" in _run(backing, "user", "list", "--after", email[:-1]).stdout


def client_list_pages(backing: Backing, *args: str) -> list[subprocess.CompletedProcess[str]]:
    """Run `keystile client list` with `args`, then each page's `more:` line, to the end."""
    pages: list[subprocess.CompletedProcess[str]] = []
    command = ["client", "list", *args]
    while True:
        listed = _run(backing, *command)
        assert listed.returncode == 0, listed.stderr
        pages.append(listed)
        hint = (listed.stderr.splitlines() or [""])[-1]
        if not hint.startswith("more: keystile "):
            assert "more:" not in listed.stderr
            return pages
        command = hint.removeprefix("more: keystile ").split()


async def test_client_list_pages_with_limit_and_after_and_names_the_next_page(
    backing: Backing, app: Quart
) -> None:
    clients = services_of(app).machine.clients
    prefix = f"cli-page-{uuid.uuid4().hex[:12]}-"
    marker = (await clients.create(f"{prefix}marker", ["account"])).record
    names = [f"{prefix}{i}" for i in range(3)]
    for name in names:
        await clients.create(name, ["account"])
    # Other tests register clients in the same database: start where this test's begin.
    after = encode_cursor(marker.created_at, marker.id)
    pages = await asyncio.to_thread(client_list_pages, backing, "--limit", "2", "--after", after)
    assert len(pages) >= 2
    hint = pages[0].stderr.splitlines()[-1]
    assert re.fullmatch(r"more: keystile client list --limit 2 --after [\w-]+", hint)
    rows = [line.split("\t") for page in pages for line in page.stdout.splitlines()]
    assert all(len(page.stdout.splitlines()) <= 2 for page in pages)
    assert [row[1] for row in rows if row[1].startswith(prefix)] == names


def test_client_list_refuses_a_cursor_it_did_not_print(backing: Backing) -> None:
    refused = _run(backing, "client", "list", "--after", "not-a-cursor")
    assert refused.returncode == 2
    assert "--after: not a cursor that `keystile client list` printed" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    ("command", "option", "value", "reason"),
    [
        ("client list", "--limit", "0", "must be 1 to 100"),
        ("client list", "--limit", "101", "must be 1 to 100"),
        ("client list", "--limit", "many", "'many' is not a whole number"),
        ("user list", "--limit", "0", "must be at least 1"),
        ("user list", "--limit", "-5", "must be at least 1"),
        ("user import users.csv", "--batch-size", "0", "must be at least 1"),
        ("serve", "--workers", "0", "must be at least 1"),
        ("audit tail", "-n", "x", "'x' is not a whole number"),
    ],
)
def test_a_number_out_of_range_is_refused_with_the_reason(
    backing: Backing, command: str, option: str, value: str, reason: str
) -> None:
    refused = _run(backing, *command.split(), option, value)
    assert refused.returncode == 2
    assert f"argument {option}" in refused.stderr
    assert reason in refused.stderr
    assert "Traceback" not in refused.stderr


def test_alembic_run_directly_reads_the_database_url_keystile_reads(backing: Backing) -> None:
    # CONTRIBUTING has contributors run alembic itself (`alembic heads`, new revisions);
    # its env reads KEYSTILE_DATABASE_URL through keystile's settings, as `migrate` does.
    env = _env(KEYSTILE_DATABASE_URL=backing.direct_database_url or backing.database_url)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "current"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    assert "(head)" in result.stdout, result.stdout


def test_migrate_against_a_stopped_database_says_where_and_why_in_one_line(
    backing: Backing,
) -> None:
    # Nothing listens on a port just freed: as PostgreSQL not (yet) running there.
    url = f"postgresql://keystile:pw-{uuid.uuid4().hex}@127.0.0.1:{free_port()}/keystile"
    for command in ("migrate", "user list"):
        env = _env(
            KEYSTILE_DATABASE_URL=url,
            KEYSTILE_REDIS_URL=backing.redis_url,
            KEYSTILE_SECRET_KEY="k" * 40,
        )
        result = subprocess.run(
            [*KEYSTILE, *command.split()], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()  # one line: no traceback, no log
        assert line.startswith(
            "keystile: database_url (KEYSTILE_DATABASE_URL): cannot connect to PostgreSQL at"
            f" 127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}, database keystile: "
        ), line
        assert "pw-" not in line  # never the password


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("KEYSTILE_SECRET_KEY_FILE", "{tmp}/missing", "secret_key_file: cannot read"),
        ("KEYSTILE_SECRET_KEY_FALLBACKS_FILE", "{tmp}/missing", "secret_key_fallbacks_file:"),
        ("KEYSTILE_SETTINGS_FILE", "{tmp}/missing.toml", "KEYSTILE_SETTINGS_FILE:"),
        ("KEYSTILE_EXTENSIONS", "keystile_catalog:CatalogExtension", "not valid JSON"),
    ],
)
def test_a_bad_setting_is_one_line_without_a_traceback(
    backing: Backing, tmp_path: Path, variable: str, value: str, said: str
) -> None:
    env = _env(
        KEYSTILE_DATABASE_URL=backing.database_url,
        KEYSTILE_REDIS_URL=backing.redis_url,
        KEYSTILE_SECRET_KEY_FILE=str(tmp_path / "unused"),
    )
    if variable != "KEYSTILE_SECRET_KEY_FILE":
        env.pop("KEYSTILE_SECRET_KEY_FILE")
        env["KEYSTILE_SECRET_KEY"] = "k" * 40
    env[variable] = value.format(tmp=tmp_path)
    result = subprocess.run(
        [*KEYSTILE, "user", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()  # one line: no traceback, no log
    assert line.startswith("keystile: ")
    assert said in line


def test_user_create_refuses_a_weak_password(backing: Backing) -> None:
    result = _run(backing, "user", "create", unique_email(), "--password-stdin", stdin="short\n")
    assert result.returncode == 2
    assert "at least 8" in result.stderr


async def test_a_command_leaves_the_servers_queued_mail_alone(
    backing: Backing, app: Quart, client: Client
) -> None:
    # A command is not a worker: no outbox sender of its own. One that had one, run with
    # another secret key, marked the servers' queued mail dead as unreadable.
    email = unique_email()
    await register(client, email)  # queues the verification mail, sealed with the app's key

    for _ in range(3):
        tail = await _run_aside(backing, "audit", "tail", "-n", "1", "--user", email)
        assert tail.returncode == 0, tail.stderr

    queued = await services_of(app).database.fetchrow(
        "SELECT attempts, sent_at, dead_at FROM outbox WHERE recipient = $1", email
    )
    assert queued is not None
    assert (queued["attempts"], queued["sent_at"], queued["dead_at"]) == (0, None, None)


async def test_disabled_user_cannot_log_in_and_its_sessions_end(
    backing: Backing, settings: Settings, client: Client
) -> None:
    # S10 (sessions part) and S6: a disabled account answers like a wrong password.
    # The CLI runs with the servers' settings, their secret key included.
    assert settings.secret_key is not None
    secret = settings.secret_key.get_secret_value()
    email = unique_email()
    created = await _run_aside(backing, "user", "create", email, "--password-stdin", stdin=PASSWORD)
    assert created.returncode == 0
    assert (await login(client, email)).status_code == 201
    assert (await client.get("/v1/me")).status_code == 200

    assert (await _run_aside(backing, "user", "disable", email, secret=secret)).returncode == 0

    # The app serves session state from its cache; the CLI's invalidation reaches it
    # through Redis pub/sub, which the design bounds at one second.
    await eventually_status(client, "/v1/me", 401, within=1.0)
    refused = await login(client, email)
    unknown = await login(client, unique_email())
    assert refused.status_code == 401
    assert await refused.get_data() == await unknown.get_data()


@pytest.mark.slow
def test_serve_with_embedded_default_over_real_http(tmp_path: Path) -> None:
    port = free_port()
    env = _env(KEYSTILE_COOKIE_SECURE="false", KEYSTILE_DATA_DIR=str(tmp_path / "var"))
    server = subprocess.Popen(
        [*KEYSTILE, "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base, server)
        with httpx.Client(base_url=base, timeout=10) as http:
            email = unique_email()
            body = {"email": email, "password": PASSWORD}
            assert http.post("/v1/users", json=body).status_code == 202
            assert http.post("/v1/sessions", json=body).status_code == 201
            me = http.get("/v1/me")
            assert me.status_code == 200
            assert me.json()["email"] == email
            logout = http.delete("/v1/sessions/current")
            assert logout.status_code == 204
            assert "content-type" not in logout.headers  # no body, no type
            assert http.get("/v1/me").status_code == 401
            for size in (20_000, 100_000):  # S24: over-long headers, in the one error shape
                huge = http.get("/healthz", headers={"X-Big": "x" * size})
                assert huge.status_code == 431
                assert huge.json()["error"]["code"] == "headers_too_large"
        assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o777 == 0o600
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = server.communicate(timeout=30)
    assert f"serving on http://127.0.0.1:{port}" in output
    assert str(tmp_path / "var") in output
    assert "started PostgreSQL (embedded)" in output
    assert "started Redis (embedded)" in output
    assert "using the running" not in output
    assert server.returncode == 0
    # Ctrl-C stopped everything serve started: no server is left on its data directory.
    assert not (tmp_path / "var" / "postgres" / "postmaster.pid").exists()
    assert not (tmp_path / "var" / "redis" / "server.json").exists()


@pytest.mark.slow
def test_serve_says_it_uses_an_embedded_server_another_command_started(
    backing: Backing, tmp_path: Path
) -> None:
    # An earlier `make run` (here: the test) left the embedded Redis running: serve joins
    # it, says so, and leaves it running when it stops.
    redis = EmbeddedRedis(tmp_path / "var", persist=False)
    url = redis.start()
    port = free_port()
    env = _env(
        KEYSTILE_DATABASE_URL=backing.database_url,
        KEYSTILE_DATA_DIR=str(tmp_path / "var"),
        KEYSTILE_LOG_FORMAT="text",
    )
    try:
        server = subprocess.Popen(
            [*KEYSTILE, "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_until_ready(f"http://127.0.0.1:{port}", server)
        finally:
            server.send_signal(signal.SIGINT)  # Ctrl-C
            output, _ = server.communicate(timeout=30)
        assert server.returncode == 0
        assert f"using the running Redis (embedded) at {url}" in output
        assert "started Redis" not in output
        assert "PostgreSQL" not in output  # neither started nor joined: database_url is set
        assert (tmp_path / "var" / "redis" / "server.json").exists()  # still running
    finally:
        redis.stop()


def _runtime_once(monkeypatch: pytest.MonkeyPatch, **settings: str) -> tuple[list[str], list[str]]:
    """Run `runtime` as one command would, and return what it started and what it joined.

    It exports its URLs (KEYSTILE_*) for the workers a command starts; they are taken back
    here, as the command's process ending would, and restored as they were after the test.
    """
    for name in ("DATA_DIR", "DATABASE_URL", "REDIS_URL", "SECRET_KEY_FILE"):
        monkeypatch.setenv(f"KEYSTILE_{name}", "")  # remembers the value before the test
        monkeypatch.delenv(f"KEYSTILE_{name}")
    with runtime(**settings) as rt:
        return rt.started, rt.joined


def test_runtime_tells_the_embedded_redis_it_started_from_one_it_joined(
    backing: Backing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "var"
    settings = {"data_dir": str(data_dir), "database_url": backing.database_url}
    earlier = EmbeddedRedis(data_dir, persist=False)
    url = earlier.start()
    try:
        started, joined = _runtime_once(monkeypatch, **settings)
        assert started == []
        assert joined == [f"Redis (embedded) at {url}, data in {earlier.directory}"]
        assert (data_dir / "redis" / "server.json").exists()  # not stopped: not its own
    finally:
        earlier.stop()
    started, joined = _runtime_once(monkeypatch, **settings)
    assert joined == []
    assert len(started) == 1
    assert started[0].startswith("Redis (embedded) at redis://127.0.0.1:")
    assert not (data_dir / "redis" / "server.json").exists()  # its own: stopped


def test_an_embedded_redis_that_persists_keeps_its_data_across_a_restart(
    tmp_path: Path,
) -> None:
    # What `make run` keeps in Redis (rate-limit windows, login backoffs, challenges)
    # outlives a restart of the command, as the data directory promises.
    redis = EmbeddedRedis(tmp_path, persist=True)
    client = Redis.from_url(redis.start())
    try:
        assert client.config_get("save") == {"save": "60 1 300 10"}
        client.set("kept", "across a restart")
    finally:
        client.close()
        redis.stop()  # SIGTERM: Redis saves on the way down when it has save points
    client = Redis.from_url(redis.start())
    try:
        assert client.get("kept") == b"across a restart"
    finally:
        client.close()
        redis.stop()


def test_an_embedded_postgres_already_running_is_joined_not_started(
    private_postgres: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    running, _ = private_postgres  # under tmp_path, as an earlier command's would be
    assert not running.joined
    again = EmbeddedPostgres(tmp_path)
    again.start()
    assert again.joined
    assert again.pgdata == running.pgdata


def _wait_until_ready(base: str, server: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"keystile serve exited: {server.stdout.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("keystile serve did not become ready")


def test_serve_on_a_busy_port_says_so_and_exits_without_starting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = _env(KEYSTILE_DATA_DIR=str(tmp_path / "var"))
        result = subprocess.run(
            [*KEYSTILE, "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"port {port} is in use; set KEYSTILE_PORT" in output
    assert "Traceback" not in output
    assert "serving on" not in output
    assert not (tmp_path / "var" / "postgres").exists()  # nothing was started first


@pytest.mark.parametrize(
    ("problem", "said"),
    [
        ("key file 0644", "must not be readable by others (chmod 600)"),
        ("fallback is the current key", "secret_key_fallbacks: one of them is the current"),
    ],
)
def test_serve_with_a_bad_secret_key_says_so_once_before_serving(
    backing: Backing, tmp_path: Path, problem: str, said: str
) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("k" * 40)
    key_file.chmod(0o644 if problem == "key file 0644" else 0o600)
    env = _env(
        KEYSTILE_DATABASE_URL=backing.database_url,
        KEYSTILE_REDIS_URL=backing.redis_url,
        KEYSTILE_SECRET_KEY_FILE=str(key_file),
        KEYSTILE_SECRET_KEY_FALLBACKS=f'["{"k" * 40}"]' if "fallback" in problem else "",
    )
    result = subprocess.run(
        [*KEYSTILE, "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()  # not each worker's traceback after "serving on"
    assert line.startswith("keystile: "), line
    assert said in line, line


async def test_user_reset_factors_removes_them_and_is_audited(
    backing: Backing, make_app: Any
) -> None:
    # S42: an operator resets a user's factors from the command line; audited.
    app = await make_app()
    client = app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    secret = (await (await client.post("/v1/me/mfa/totp")).get_json())["secret"]
    confirmed = await client.post(
        "/v1/me/mfa/totp/confirm", json={"code": pyotp.TOTP(secret).now()}
    )
    assert confirmed.status_code == 200
    assert await error_code_of(login(app.test_client(), email)) == "mfa_required"

    result = await _run_aside(backing, "user", "reset-factors", email)
    assert result.returncode == 0, result.stderr
    assert "removed 1 second factor" in result.stdout
    database = services_of(app).database
    factors = await database.fetchval("SELECT mfa_factors FROM users WHERE email = $1", email)
    assert factors == []
    detail = await database.fetchval(
        "SELECT detail->>'actor' FROM audit_events a JOIN users u ON u.id = a.user_id "
        "WHERE u.email = $1 AND kind = 'mfa_reset'",
        email,
    )
    assert detail == "cli"
    assert (await _run_aside(backing, "user", "reset-factors", unique_email())).returncode == 1


async def error_code_of(response: Any) -> str:
    return str((await (await response).get_json())["error"]["code"])
