"""The benchmark's report: what its ratios count (the harness itself, no servers)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import render
from bench.measure import CpuSplit, Measurement
from bench.report import Report, _ratios, load_report

_RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def test_a_login_ratio_counts_only_the_logins_served_not_the_503s() -> None:
    cold = Measurement("keystile", "login-cold", rps=80.0, ok_rps=60.0)
    report = Report(
        meta={},
        measurements=[
            Measurement("ceiling", "hash-ceiling", rps=100.0),
            cold,
            Measurement("baseline", "login-cold", rps=75.0, ok_rps=75.0),
        ],
        sweeps=[],
        checks=[],
    )

    assert _ratios(report, cold) == "0.60 x hash; 0.80 x baseline"


def test_the_cpu_split_takes_a_hash_s_cpu_from_the_metrics_read_around_each_block() -> None:
    # (hashing CPU seconds, hashes) as the server's metrics report them, twice per block.
    readings = iter([(1.0, 10), (3.5, 110), (3.5, 110), (5.0, 160)])
    cpu = CpuSplit(lambda: 0.0, (), hashing=lambda: next(readings))
    for _ in range(2):
        with cpu.measuring():
            pass

    assert (cpu.hashing_s, cpu.hashes) == (4.0, 150)
    assert cpu.cpu_per_hash_ms == 26.7
    assert "hashing" in cpu.cores()
    assert cpu.summary() == {"cpu_split": cpu.cores(), "cpu_per_hash_ms": 26.7}


def test_a_server_without_hashing_metrics_has_no_hashing_share() -> None:
    cpu = CpuSplit(lambda: 0.0, (), hashing=lambda: None)
    with cpu.measuring():
        pass

    assert cpu.cpu_per_hash_ms is None
    assert "hashing" not in cpu.cores()
    assert cpu.summary() == {"cpu_split": cpu.cores()}


def test_re_rendering_a_run_keeps_the_checks_that_need_its_parameters() -> None:
    # `python -m bench.render` re-evaluates a stored run's targets (its plots need the
    # bench's own requirements, so only the checks are exercised here).
    runs = sorted(_RESULTS.glob("*.json"), reverse=True)
    kept = next(path for path in runs if _BURST_P99 in _checks(path))

    rechecked = render.recheck(load_report(kept))

    assert {check.name for check in rechecked} == _checks(kept)


_BURST_P99 = "burst: 200s p99"  # needs the run's wait budget and hash time


def _checks(path: Path) -> set[str]:
    return {check["name"] for check in json.loads(path.read_text())["checks"]}
