"""Profile GET /v1/me (or refused logins) under wrk with py-spy (native), print the top.

    .venv/bin/python -m bench.profile_me [--seconds 15] [--connections 32]
                                         [--refusals | --logins | --warm-logins
                                          | --totp-logins | --cookie]
                                         [--request-log] [--cpu-only]

`--refusals` profiles what a login refused for hash capacity costs (503 `overloaded`):
the worker's single hash thread is kept busy by slow hashes and the wait budget is
zero, so every other cold login is refused after its one Redis call. `--logins`
profiles cold logins that succeed (the credential cache off, so each one hashes) and
says how the worker's CPU splits between the hash thread and everything else;
`--warm-logins` profiles logins answered from the credential cache (no hash);
`--totp-logins` profiles cold logins of users with an authenticator app, both steps
(`bench/lua/login_totp.lua`, as `make bench`'s login-cold-totp): compare its "per 2xx
answer" figures with `--logins`' to see what the second step costs.
`--request-log` turns the request log on, as in production (`make bench` and the other
modes run the server at log level warning, like the Flask baseline without an access log).

Starts one `keystile serve --workers 1` on embedded PostgreSQL and Redis in a temporary
directory, logs a user in for a bearer token, drives GET /v1/me with wrk, and samples the
worker with `py-spy record --native --format raw` meanwhile. Prints the functions with
the most samples on their own (self) and in their subtree (total). py-spy must be
installed (`pip install py-spy`); it needs ptrace (root, or a container with SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.seed import PASSWORD, hash_password
from bench.servers import ServerProcess, scratch_keystile_server, unlimited_rates
from bench.totp import seed_totp_users, write_totp_codes
from keystile.embedded import EmbeddedPostgres
from keystile.settings.security import HashingSettings

_ROOT = Path(__file__).resolve().parents[1]


def _py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    return found


def _worker_pid(supervisor: int) -> int:
    # Its children are the embedded servers, multiprocessing's resource tracker and the
    # Hypercorn worker: under load, the Python child that has used the most CPU.
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    busiest: tuple[int, int] | None = None
    for child in children:
        command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if not command or b"python" not in Path(command[0].decode()).name.encode():
            continue
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = int(fields[11]) + int(fields[12])  # utime + stime
        if busiest is None or cpu > busiest[0]:
            busiest = (cpu, int(child))
    if busiest is not None:
        return busiest[1]
    raise RuntimeError("keystile serve has no worker yet")


def _thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds so far of `pid`'s main thread (the event loop) and of its other threads."""
    tick = os.sysconf("SC_CLK_TCK")
    main = others = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if int(task.name) == pid:
            main += seconds
        else:
            others += seconds
    return main, others


def _top(raw: Path, count: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int, int]:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = hashing = 0
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        n = int(weight)
        if any("concurrent/futures/thread.py" in frame for frame in frames):
            hashing += n  # the hashing threads: counted apart from the request path
            continue
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return own.most_common(count), total.most_common(count), samples, hashing


_WRK_THREADS = 2
_LOGIN_USERS = 200  # registered for --logins, each logged in in turn
_WARM_USERS = 8  # registered for --warm-logins, as bench's login-warm


# Clients that wait what a 503's or 429's Retry-After says, as bench/lua/common.lua.
_RETRY_AFTER_LUA = """
local owed = {}
function response(status, headers, body)
   if status == 503 or status == 429 then
      local after = tonumber(headers["Retry-After"] or headers["retry-after"] or "")
      if after ~= nil then table.insert(owed, after * 1000) end
   end
end
function delay()
   if #owed == 0 then return 0 end
   return table.remove(owed, 1)
end
"""


def _login_lua(email: str, password: str, index: str) -> str:
    """A wrk script that POSTs one password login per request: `email` holds a `%d`
    filled with the Lua expression `index` of `k`, this request's number over all of
    wrk's threads (each thread has its own Lua state: a per-thread counter alone would
    send the same users from both threads at once, and concurrent logins of one user
    share one hash)."""
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
   thread:set("id", threads)
   threads = threads + 1
end
local n = 0
function request()
   n = n + 1
   local k = n * {_WRK_THREADS} + (id or 0)
   local body = string.format('{{"email":"{email}","password":"{password}"}}', {index})
   return wrk.format(nil, nil, nil, body)
end
"""


def _totp_logins(
    server: ServerProcess, work: Path, args: argparse.Namespace
) -> tuple[Path, list[str]]:
    """Seed users with an authenticator app in the server's own database (as `make
    bench` does); return `bench/lua/login_totp.lua` and its arguments. Each user logs in
    once: enough of them for the run at a generous rate (a code is refused if replayed)."""
    database_url = EmbeddedPostgres(work / "var").start()  # joins the server's
    secret_key = server.env_value("KEYSTILE_SECRET_KEY") or ""
    users = 200 * int(args.seconds + 10)
    seed_totp_users(database_url, users, _default_hash(), secret_key.encode())
    codes = work / "totp-codes.txt"
    write_totp_codes(codes, args.seconds + 60)
    lua = _ROOT / "bench" / "lua" / "login_totp.lua"
    wrk_args = ["/v1/tokens", "/v1/tokens/mfa", "0", str(users), PASSWORD, str(codes)]
    return lua, [*wrk_args, str(_WRK_THREADS), *(["retry-after"] if args.retry_after else [])]


def _default_hash() -> str:
    """The bench password hashed with keystile's default argon2id parameters."""
    defaults = HashingSettings()
    return hash_password(defaults.memory_kib, defaults.time_cost, defaults.parallelism)


def _wrk_line(output: str, marker: str) -> str:
    """Return the line of wrk's summary that contains `marker`, or "" without one."""
    return next((line for line in output.splitlines() if marker in line), "")


def _cpu_only(
    wrk: subprocess.Popen[str],
    worker: int,
    before: tuple[float, float],
    started: float,
    args: argparse.Namespace,
) -> int:
    time.sleep(args.seconds)
    after, spent = _thread_cpu(worker), time.monotonic() - started
    wrk_out, _ = wrk.communicate(timeout=60)
    rate = _wrk_line(wrk_out, "Requests/sec")
    other = _wrk_line(wrk_out, "Non-2xx")
    sent = _wrk_line(wrk_out, "requests in")
    answers = float(rate.split()[-1]) * spent if rate else float("nan")
    loop, threads = (a - b for a, b in zip(after, before, strict=True))
    print(
        f"{rate.strip()}; event loop {loop / spent:.2f} cores, "
        f"{1000 * loop / answers:.3f} ms per answer; other threads "
        f"{1000 * threads / answers:.3f} ms per answer"
    )
    errors = _wrk_line(wrk_out, "Socket errors")
    if errors:
        print(errors.strip())
    if other and sent:
        refused = int(other.split()[-1]) / int(sent.split()[0])
        ok = answers * (1 - refused)
        print(
            f"{100 * refused:.1f} % non-2xx; per 2xx answer: event loop "
            f"{1000 * loop / ok:.3f} ms, other threads {1000 * threads / ok:.3f} ms"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="figures are the busiest one's")
    parser.add_argument("--hash-threads", type=int, help="per worker (default: keystile's)")
    parser.add_argument(
        "--retry-after", action="store_true", help="login clients wait what a 503 says"
    )
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--keep-raw", type=Path, help="copy py-spy's raw stacks here")
    parser.add_argument(
        "--cpu-only",
        action="store_true",
        help="no py-spy: only the worker's CPU per answer, undisturbed by sampling",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--refusals", action="store_true", help="profile refused logins")
    mode.add_argument("--logins", action="store_true", help="profile cold logins")
    mode.add_argument(
        "--warm-logins", action="store_true", help="profile warm logins (credential cache hits)"
    )
    mode.add_argument(
        "--totp-logins", action="store_true", help="profile cold logins with a TOTP second step"
    )
    mode.add_argument("--cookie", action="store_true", help="GET /v1/me with a session cookie")
    parser.add_argument(
        "--request-log",
        action="store_true",
        help="log every request as in production (level info, JSON lines to a file); "
        "otherwise the server logs warnings only, as `make bench` runs it",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="keystile-profile-"))
    env: dict[str, str] = {}
    if args.hash_threads:
        env["KEYSTILE_HASH_THREADS"] = str(args.hash_threads)
    if args.refusals:
        env.update(
            KEYSTILE_HASH_THREADS="1",
            KEYSTILE_LOGIN_WAIT_BUDGET_MS="0",
            KEYSTILE_ARGON2_TIME_COST="60",  # seconds-long hashes keep the one thread busy
            **unlimited_rates("LOGIN", "TOKEN"),
        )
    if args.warm_logins:
        env.update(**unlimited_rates("LOGIN", "TOKEN", "REGISTER"))
    if args.logins or args.totp_logins:
        env.update(
            KEYSTILE_CREDENTIAL_CACHE_TTL_SECONDS="0",  # every login hashes
            **unlimited_rates("LOGIN", "TOKEN", "REGISTER"),
        )
    log_level = "info" if args.request_log else "warning"
    server = scratch_keystile_server(work, workers=args.workers, log_level=log_level, env=env)
    base = server.base_url
    try:
        server.start(timeout_s=120)
        body = {"email": "profile@example.com", "password": "a profile passphrase"}
        httpx.post(f"{base}/v1/users", json=body, timeout=30)
        lua = work / "load.lua"
        path = "/v1/me"
        wrk_args: list[str] = []
        if args.refusals:
            path = "/v1/tokens"
            # Accounts that do not exist: each login needs a hash, so each is refused.
            lua.write_text(_login_lua("nobody-%d@example.com", "not a password", "k"))
        elif args.logins or args.warm_logins:
            path = "/v1/tokens"
            # Cold: the credential cache is off, so every login hashes. Warm: a few
            # accounts in turn, each hashed once and then found in the cache.
            users = _WARM_USERS if args.warm_logins else _LOGIN_USERS
            for n in range(users):
                user = {"email": f"user-{n}@example.com", "password": body["password"]}
                httpx.post(f"{base}/v1/users", json=user, timeout=30)
            script = _login_lua("user-%d@example.com", body["password"], f"k % {users}")
            lua.write_text(script + (_RETRY_AFTER_LUA if args.retry_after else ""))
        elif args.totp_logins:
            path = "/v1/tokens"
            lua, wrk_args = _totp_logins(server, work, args)
        elif args.cookie:
            login = httpx.post(f"{base}/v1/sessions", json=body, timeout=30)
            cookie = "; ".join(f"{name}={value}" for name, value in login.cookies.items())
            lua.write_text(f'wrk.headers["Cookie"] = "{cookie}"\n')
        else:
            token = httpx.post(f"{base}/v1/tokens", json=body, timeout=30).json()["access_token"]
            lua.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
        wrk = subprocess.Popen(
            [
                "wrk",
                f"-t{_WRK_THREADS}",
                f"-c{args.connections}",
                f"-d{int(args.seconds + 4)}s",
                "--timeout=5s",  # as the bench: a timed-out login's hash is wasted work
                "-s",
                str(lua),
                f"{base}{path}",
                *wrk_args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        raw = work / "me.raw"
        worker = _worker_pid(server.pid)
        cpu_before, spy_started = _thread_cpu(worker), time.monotonic()
        if args.cpu_only:
            return _cpu_only(wrk, worker, cpu_before, spy_started, args)
        spy = subprocess.run(
            [
                _py_spy(),
                "record",
                "--native",
                "--format",
                "raw",
                "--duration",
                str(int(args.seconds)),
                "--rate",
                "250",
                "--output",
                str(raw),
                "--pid",
                str(worker),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        cpu_after, spied = _thread_cpu(worker), time.monotonic() - spy_started
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {spy.stderr.strip()[-500:]}")
        wrk_out, _ = wrk.communicate(timeout=60)
        if args.keep_raw is not None:
            shutil.copyfile(raw, args.keep_raw)
        own, total, samples, hashing = _top(raw, args.top)
        rate = _wrk_line(wrk_out, "Requests/sec")
        print(f"wrk: {rate.strip()}  ({args.connections} connections)")
        print(f"py-spy: {samples} samples of the worker, {hashing} more of its hash threads")
        loop, threads = (
            after - before for after, before in zip(cpu_after, cpu_before, strict=True)
        )
        per = 1000 / (float(rate.split()[-1]) * spied) if rate else float("nan")
        print(
            f"CPU while sampled ({spied:.1f} s): event loop {loop / spied:.2f} cores "
            f"({loop * per:.2f} ms per answer), other threads {threads / spied:.2f} cores "
            f"({threads * per:.2f} ms per answer)\n"
        )
        print("| self % | function |\n|---:|---|")
        for frame, n in own:
            print(f"| {100 * n / samples:.1f} | `{frame[:110]}` |")
        print("\n| total % | function |\n|---:|---|")
        for frame, n in total:
            print(f"| {100 * n / samples:.1f} | `{frame[:110]}` |")
    finally:
        server.stop(timeout_s=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
