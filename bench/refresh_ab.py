"""`python -m bench.refresh_ab LABEL:TREE ...`: refresh throughput of source trees, side by side.

For each round, for each tree in turn: starts `keystile serve --workers 2` from that
tree's `src/` (embedded PostgreSQL and Redis in a temporary directory, the bench's
unlimited rates), logs one user per connection in for a refresh token, then drives
`POST /v1/tokens/refresh` with wrk and `bench/lua/refresh.lua` (each 200 answer gives
the connection its next token) and prints the 200s per second, the cores the server's
process tree used meanwhile, and their ratio: refreshes per second per server core, as
`make bench` reports the refresh target. Alternating the trees round by round keeps the
machine's drift out of the comparison. Example, the working tree against a worktree of
the last commit:

    git worktree add /tmp/before HEAD
    .venv/bin/python -m bench.refresh_ab before:/tmp/before after:.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.processes import tree_cpu_seconds
from bench.seed import PASSWORD
from bench.servers import scratch_keystile_server, unlimited_rates

_LUA = Path(__file__).with_name("lua") / "refresh.lua"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.refresh_ab", description=__doc__)
    parser.add_argument("trees", nargs="+", metavar="LABEL:TREE", help="a source tree's root")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    trees = [tuple(spec.split(":", 1)) for spec in args.trees]
    for label, tree in trees:
        if not (Path(tree) / "src" / "keystile").is_dir():
            parser.error(f"{label}: {tree} has no src/keystile")
    for round_ in range(args.rounds):
        for label, tree in trees:
            rate, cores, statuses = _measure(Path(tree).resolve(), args.seconds, args.connections)
            sys.stdout.write(
                f"{label} round {round_}: {rate:7.1f} refreshes/s, server {cores:.2f} cores, "
                f"{rate / cores:6.1f}/s per core, answers {statuses}\n"
            )
            sys.stdout.flush()
    return 0


def _measure(tree: Path, seconds: int, connections: int) -> tuple[float, float, dict[str, int]]:
    work = Path(tempfile.mkdtemp(prefix="keystile-refresh-ab-"))
    env = {
        "PYTHONPATH": str(tree / "src"),
        **unlimited_rates("LOGIN", "TOKEN", "REGISTER", "REFRESH"),
    }
    server = scratch_keystile_server(work, workers=2, env=env)
    base = server.base_url
    try:
        server.start(timeout_s=120)
        with ThreadPoolExecutor(max_workers=4) as pool:
            tokens = list(pool.map(lambda n: _refresh_token(base, n), range(connections)))
        token_file = work / "tokens.txt"
        token_file.write_text("\n".join(tokens) + "\n")
        time.sleep(2)  # the logins' hashes end before the meter starts
        cpu_before, started = tree_cpu_seconds([server.pid]), time.monotonic()
        wrk = subprocess.run(
            [
                *("wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(_LUA)),
                *(f"{base}/v1/tokens/refresh", "--", "/v1/tokens/refresh", str(token_file), "2"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.monotonic() - started
        cores = (tree_cpu_seconds([server.pid]) - cpu_before) / elapsed
    finally:
        server.stop(timeout_s=60)
    line = next(x for x in wrk.stdout.splitlines() if x.startswith("BENCH_JSON "))
    statuses: dict[str, int] = json.loads(line.removeprefix("BENCH_JSON "))["statuses"]
    return statuses.get("200", 0) / elapsed, cores, statuses


def _refresh_token(base: str, n: int) -> str:
    body = {"email": f"refresh-{n}@example.com", "password": PASSWORD}
    httpx.post(f"{base}/v1/users", json=body, timeout=60).raise_for_status()
    answer = httpx.post(f"{base}/v1/tokens", json=body, timeout=60)
    answer.raise_for_status()
    token: str = answer.json()["refresh_token"]
    return token


if __name__ == "__main__":
    raise SystemExit(main())
