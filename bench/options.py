"""Command-line options and the three run profiles (smoke, quick, full).

A profile fixes how long each scenario runs. `quick` (the default) keeps a whole
`make bench` under about fifteen minutes on a 2-core machine; `full` takes longer
and sweeps more concurrency levels; `smoke` runs every scenario for a second or so
to prove the harness works (CI), and its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["PROFILES", "Options", "Profile", "parse_options"]

_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Profile:
    """How long and how often each scenario is measured."""

    name: str
    duration_s: float  # one measured round
    rounds: int  # medians are taken over these
    warmup_s: float  # run first and thrown away
    sweep: tuple[int, ...]  # connection counts for the latency-vs-concurrency plot
    sweep_rounds: int  # interleaved rounds per sweep point (medians)
    small_store: int  # users stored for the scale scenario's small case
    large_store: int  # ... and for its large case (and every other scenario)


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", 1, 1, 1, (4, 16), 1, 1_000, 20_000),
    "quick": Profile("quick", 4, 4, 2, (1, 4, 16, 64), 2, 1_000, 1_000_000),
    "full": Profile("full", 8, 6, 3, (1, 2, 4, 8, 16, 32, 64, 128), 3, 1_000, 1_000_000),
}


@dataclass(frozen=True, slots=True)
class Options:
    """Everything a run needs to know."""

    profile: Profile
    workers: int
    connections: int  # for the request-bound scenarios (me-*, refresh, framework ceiling)
    login_connections: int | None  # None: twice the hash threads across all workers
    wrk_threads: int
    timeout_s: float
    database_url: str | None
    redis_url: str | None
    data_dir: Path
    output_dir: Path
    baseline: bool
    baseline_venv: Path
    argon2_memory_kib: int
    argon2_time_cost: int
    argon2_parallelism: int
    server_env: dict[str, str]
    update_readme: bool
    nice: int
    root: Path = _ROOT


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_options(argv: list[str] | None = None) -> Options:
    """Parse the command line into `Options` (see `python -m bench --help`)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="keystile's benchmark: ceilings, scenarios, baseline."
    )
    mode = parser.add_mutually_exclusive_group()
    for name in PROFILES:
        mode.add_argument(
            f"--{name}",
            dest="profile",
            action="store_const",
            const=name,
            help=f"profile {name!r}" + (" (default)" if name == "quick" else ""),
        )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--duration", type=float, help="seconds per measured round")
    parser.add_argument("--rounds", type=int, help="measured rounds per scenario (medians)")
    parser.add_argument("--connections", type=int, default=32, help="for request-bound scenarios")
    parser.add_argument("--login-connections", type=int, help="for login scenarios")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5.0, help="wrk's request timeout, s")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"))
    parser.add_argument("--data-dir", type=Path, default=_ROOT / "var" / "bench")
    parser.add_argument("--output-dir", type=Path, help="default: bench/results (smoke: var)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument("--baseline-venv", type=Path, default=_ROOT / ".venv-bench")
    parser.add_argument("--argon2-memory-kib", type=int, default=19456)
    parser.add_argument("--argon2-time-cost", type=int, default=2)
    parser.add_argument("--argon2-parallelism", type=int, default=1)
    parser.add_argument(
        "--server-env",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for keystile (e.g. KEYSTILE_HASH_THREADS=1); repeatable",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="run everything at niceness -N (root only): on a shared machine, the bench's"
        " processes then take CPU from everyone else's; off by default",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile or "quick"]
    if args.duration is not None:
        profile = replace(profile, duration_s=args.duration)
    if args.rounds is not None:
        profile = replace(profile, rounds=max(1, args.rounds))
    smoke = profile.name == "smoke"
    output_dir = args.output_dir or (
        _ROOT / "var" / "bench-smoke" if smoke else _ROOT / "bench" / "results"
    )
    return Options(
        profile=profile,
        workers=max(1, args.workers),
        connections=max(1, args.connections),
        login_connections=args.login_connections,
        wrk_threads=max(1, args.wrk_threads),
        timeout_s=args.timeout,
        database_url=args.database_url,
        redis_url=args.redis_url,
        data_dir=args.data_dir.resolve(),
        output_dir=output_dir.resolve(),
        baseline=args.baseline,
        baseline_venv=args.baseline_venv,
        argon2_memory_kib=args.argon2_memory_kib,
        argon2_time_cost=args.argon2_time_cost,
        argon2_parallelism=args.argon2_parallelism,
        server_env=dict(args.server_env),
        update_readme=not smoke and args.output_dir is None,
        nice=max(0, args.nice),
    )
