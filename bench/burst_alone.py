"""`python -m bench.burst_alone`: bursts against keystile alone, to study admission.

Starts embedded PostgreSQL and Redis and one `keystile serve` (the bench's settings),
seeds users, then sends `--bursts` bursts of `--size` cold logins one after another
(bench/burst.py: each client honours Retry-After) and prints, per burst, the summary
line of `make bench`, how many clients needed each number of retries and where the CPU
went while it ran (`CpuSplit`, as the report's CPU split). Extra server
environment goes in with `--server-env KEY=VALUE`, as for `python -m bench`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from bench.backends import backends
from bench.burst import burst_measurement, run_burst
from bench.options import parse_options
from bench.run import Run, _plan, _serving
from bench.scenarios import CREDENTIAL_USERS, Target
from bench.seed import reset_users, seed_users
from bench.servers import keystile_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst_alone", description=__doc__)
    parser.add_argument("--size", type=int, default=800, help="logins per burst")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--ceiling", type=float, default=76.0, help="hash ceiling, logins/s")
    own, rest = parser.parse_known_args(argv)
    options = parse_options(["--no-baseline", *rest])
    with backends(options.data_dir, options.database_url, options.redis_url) as stores:
        run = Run(options, stores, _plan(options))
        reset_users(stores.database_url)
        stop = CREDENTIAL_USERS + own.size * own.bursts
        seed_users(stores.database_url, 0, stop, run.password_hash)
        server = keystile_server(options, stores, run.log_dir)
        with _serving(server):
            target = Target("keystile", server, options, run.work_dir, "/v1/tokens")
            for _ in range(own.bursts):
                result, cpu = run_burst(target, run.cursor, own.size, stores.pids, stores.pid_names)
                burst_measurement(target, result, own.ceiling)
                sys.stdout.write(f"cores busy while it ran: {cpu.cores()}\n")
                sys.stdout.write(f"CPU per hash: {cpu.cpu_per_hash_ms} ms\n")
                retries = sorted(Counter(result.retries).items())
                sys.stdout.write(f"retries (count: clients) {retries}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
