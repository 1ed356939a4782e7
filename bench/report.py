"""Write a run's results: JSON (everything), Markdown (the tables a person reads).

Files are named `<date>-<host>` so runs on different machines or days sit side by
side in bench/results/. For full and quick runs the Markdown is also pasted into
bench/README.md between its results markers, so the README shows the latest run.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.checks import Check
from bench.measure import Measurement, SweepPoint, number

__all__ = ["Report", "load_report", "publish", "update_readme", "write_json", "write_markdown"]

_README_BLOCK = re.compile(r"(<!-- results:start -->\n).*?(<!-- results:end -->)", re.DOTALL)


@dataclass
class Report:
    """One run: its context, measurements, sweeps and target checks."""

    meta: dict[str, Any]
    measurements: list[Measurement]
    sweeps: list[SweepPoint]
    checks: list[Check]

    def find(self, target: str, scenario: str) -> Measurement | None:
        return next(
            (m for m in self.measurements if m.key == (target, scenario) and not m.skipped), None
        )


def write_json(report: Report, path: Path) -> None:
    data = {
        "meta": report.meta,
        "measurements": [m.to_dict() for m in report.measurements],
        "sweeps": [_sweep(p) for p in report.sweeps],
        "checks": [c.to_dict() for c in report.checks],
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _sweep(point: SweepPoint) -> dict[str, Any]:
    return {
        "target": point.target,
        "scenario": point.scenario,
        "connections": point.connections,
        "rps": round(point.rps, 1),
        "p50_ms": round(point.p50_ms, 3),
        "p99_ms": round(point.p99_ms, 3),
    }


def _problems(m: Measurement) -> str:
    parts = [f"{n}x{status}" for status, n in m.statuses.items() if not status.startswith("2")]
    if parts and m.ok_rps is not None:
        parts.insert(0, f"2xx {m.ok_rps:,.1f}/s")
    parts += [f"{n} {kind}" for kind, n in m.errors.items() if n]
    return ", ".join(parts) or "none"


_CEILING_OF = {
    "login-cold": "hash-ceiling",
    "login-warm": "hash-ceiling",
    "me-bearer": "framework-ceiling",
    "me-cookie": "framework-ceiling",
    "refresh": "framework-ceiling",
    "me-api-key": "framework-ceiling",
}


def _served(m: Measurement) -> float | None:
    """2xx answers per second: a 503 or a 401 is not a login served."""
    return m.ok_rps if m.ok_rps is not None else m.rps


def _ratios(report: Report, m: Measurement) -> str:
    served = _served(m)
    if served is None or m.target == "ceiling":
        return ""
    parts = []
    ceiling_name = _CEILING_OF.get(m.scenario.split("/")[-1])
    ceiling = report.find("ceiling", ceiling_name) if ceiling_name else None
    if ceiling_name and ceiling and ceiling.rps:
        parts.append(f"{served / ceiling.rps:.2f} x {ceiling_name.split('-')[0]}")
    if m.target == "keystile":
        baseline = report.find("baseline", m.scenario)
        baseline_served = _served(baseline) if baseline else None
        if baseline_served:
            parts.append(f"{served / baseline_served:.2f} x baseline")
    return "; ".join(parts)


def _cpu(m: Measurement) -> str:
    if m.cpu_s_per_1k is None:
        return "-"
    db = f" + {m.db_cpu_s_per_1k:.2f} db" if m.db_cpu_s_per_1k is not None else ""
    return f"{m.cpu_s_per_1k:.2f}{db}"


def _split_order(name: str) -> int:
    order = ["server", "hashing", "postgresql", "redis", "load generator", "other"]
    return order.index(name) if name in order else len(order)


def _noise(report: Report) -> list[str]:
    """Warn when other work took much of the machine while this run measured."""
    loads = [m.other_cores for m in report.measurements if m.other_cores is not None]
    cores = report.meta["machine"]["cores"] or 1
    if not loads:
        return []
    typical = statistics.median(loads)
    if typical < 0.2:
        return [f"Other load while measuring: {typical:.2f} cores (a quiet machine).", ""]
    return [
        f"**Other load while measuring: {typical:.2f} of {cores} cores** (median over rows):"
        " other work shared the machine, so absolute figures are well below what an idle"
        " machine gives. Arms of a comparison were interleaved round by round, so the ratios"
        " are still taken under the same conditions.",
        "",
    ]


def markdown(report: Report, images: list[str]) -> str:
    """Return the run as Markdown: context, the results table, the targets, the plots."""
    meta = report.meta
    machine = meta["machine"]
    params = meta["parameters"]
    lines = [
        f"Run **{meta['run_id']}** ({meta['profile']} profile, {meta['started']}, commit"
        f" `{meta.get('commit', '?')}`): {machine['cpu_model']}, {machine['cores']} cores,"
        f" {machine['memory_gib']} GiB, {machine['os']}; Python {machine['python']};"
        f" {machine['wrk']}.",
        "",
        f"Workers: **{params['workers']}** per server."
        f" argon2id: m={params['argon2_memory_kib']} KiB,"
        f" t={params['argon2_time_cost']}, p={params['argon2_parallelism']}"
        f" ({params.get('hash_ms', '?')} ms per hash here); keystile hash threads"
        f" {params['hash_threads']} per worker, wait budget"
        f" {params.get('login_wait_budget_ms', '?')} ms: {params.get('admitted', '?')} logins"
        " admitted at once."
        f" Connections: {params['connections']} (reads), {params['login_connections']} (logins),"
        f" {params['storm_connections']} (storm logins). Rounds: {params['rounds']} x"
        f" {params['duration_s']:g} s after a {params['warmup_s']:g} s warm-up; medians shown,"
        f" max is the max over rounds. Users stored: {params['users_stored']:,}."
        f" Login endpoint: `{params['login_path']}`.",
        "",
        *_noise(report),
        "| target | scenario | conn | req/s | p50 ms | p99 ms | max ms | non-2xx / errors | ratio"
        " | CPU s / 1k req (app + db) | other load |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for m in report.measurements:
        if m.skipped:
            lines.append(f"| {m.target} | {m.scenario} | | | | | | skipped: {m.skipped} | | | |")
            continue
        lines.append(
            f"| {m.target} | {m.scenario} | {m.connections or '-'} | {number(m.rps)} |"
            f" {number(m.p50_ms, 2)} | {number(m.p99_ms, 2)} | {number(m.max_ms, 1)} |"
            f" {_problems(m)} |"
            f" {_ratios(report, m)} | {_cpu(m)} | {number(m.other_cores, 2)} |"
        )
    lines += [
        "",
        "*ratio*: 2xx answers per second (not every answer: a refused login is not served)"
        " against the matching ceiling (hash for logins, framework for reads) and,"
        " for keystile, against the baseline's same scenario. *other load*: cores busy with"
        " anything but the server under test, its databases and the load generator (other"
        " users of a shared machine); high values mean noisy figures.",
    ]
    storms = [m for m in report.measurements if m.scenario == "storm" and not m.skipped]
    if storms:
        lines += [
            "",
            "Storm detail (reads alone vs during the login storm; login answers by status):",
            "",
            "| target | reads | req/s alone | req/s storm | p99 alone ms | p99 storm ms | ratio"
            " | login answers | 503 p50 / p99 ms (probe) | timeouts | other 5xx |",
            "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
        ]
        for m in storms:
            e = m.extra
            rejected = e["probe"].get("503")
            rejected_text = (
                f"{rejected['p50_ms']:.1f} / {rejected['p99_ms']:.1f}" if rejected else "no 503"
            )
            answers = ", ".join(f"{n}x{s}" for s, n in e["login_statuses"].items()) or "-"
            completed = e["me_completed_storm"]
            storm_p99 = number(e["me_p99_storm_ms"]) if completed else "none completed"
            lines.append(
                f"| {m.target} | {e['me_scenario']} | {number(e['me_rps_alone'])} |"
                f" {number(m.rps)} |"
                f" {e['me_p99_alone_ms']:.1f} |"
                f" {storm_p99} | {e['me_p99_ratio'] or '-'} | {answers} | {rejected_text} |"
                f" {e['timeouts']} | {e['non_503_5xx']} |"
            )
    bursts = [m for m in report.measurements if m.scenario == "burst" and not m.skipped]
    if bursts:
        lines += [
            "",
            "Burst detail (N cold logins written at once; clients retry after Retry-After):",
            "",
            "| target | N | all served after s | served/s | x hash ceiling | 503 answers"
            " | 503 p50 / p99 ms | Retry-After values s | retries max | timeouts"
            " | 200 p50 / p99 ms |",
            "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---|",
        ]
        for m in bursts:
            e = m.extra
            spread = e["retry_after_spread_s"]
            spread_text = f"{spread[0]}..{spread[-1]}" if spread else "-"
            lines.append(
                f"| {m.target} | {e['size']} | {e['drained_s']} | {e['served_per_s']} |"
                f" {e['ceiling_ratio']} | {e['refused']} | {number(e['refused_p50_ms'])} /"
                f" {number(e['refused_p99_ms'])} | {spread_text} | {e['max_retries']} |"
                f" {e['timeouts']} | {number(m.p50_ms)} / {number(m.p99_ms)} |"
            )
    splits = [m for m in report.measurements if m.extra.get("cpu_split")]
    if splits:
        names = sorted({name for m in splits for name in m.extra["cpu_split"]}, key=_split_order)
        lines += [
            "",
            "CPU split (cores busy while each arm ran, the storm's while its logins stormed;"
            " *hashing* is the part of *server* keystile's hashing threads spent (its metrics),"
            " *CPU per hash* what one hash cost them (the hash ceiling's: hashing alone);"
            " *load generator* is wrk and the harness (the burst's clients, the storm's probe);"
            " *settled* is how long the arm waited, over all its rounds, for the work of the"
            " arm before it to end):",
            "",
            "| target | scenario | " + " | ".join(names) + " | CPU per hash ms | settled s |",
            "|---|---|" + "---:|" * (len(names) + 2),
        ]
        for m in splits:
            split = m.extra["cpu_split"]
            lines.append(
                f"| {m.target} | {m.scenario} | "
                + " | ".join(number(split.get(name), 2) for name in names)
                + f" | {number(m.extra.get('cpu_per_hash_ms'), 1)}"
                + f" | {number(m.extra.get('settled_s'), 1)} |"
            )
    lines += ["", "Targets (BENCHMARK.md):", "", "| target | measured | wanted | verdict |"]
    lines.append("|---|---|---|---|")
    for check in report.checks:
        verdict = {"met": "met", "MISSED": "**MISSED**"}.get(check.verdict, check.verdict)
        lines.append(f"| {check.name} | {check.measured} | {check.target} | {verdict} |")
    lines.append("")
    for image in images:
        lines.append(f"![{image}]({image})")
    return "\n".join(lines) + "\n"


def write_markdown(report: Report, path: Path, images: list[str]) -> str:
    text = markdown(report, images)
    path.write_text(f"# keystile bench {report.meta['run_id']}\n\n{text}")
    return text


def update_readme(readme: Path, text: str) -> bool:
    """Replace the README's results block with `text`; return whether it was found."""
    original = readme.read_text()
    if not _README_BLOCK.search(original):
        return False
    readme.write_text(
        _README_BLOCK.sub(lambda match: match.group(1) + text + match.group(2), original)
    )
    return True


def publish(report: Report, out: Path, readme: Path | None) -> str:
    """Write JSON, Markdown and PNGs into `out` (and the README block); return the Markdown."""
    from bench.plots import (  # matplotlib only when drawing
        plot_burst,
        plot_latency,
        plot_throughput,
    )

    out.mkdir(parents=True, exist_ok=True)
    stem = report.meta["run_id"]
    images = []
    if plot_latency(report, out / f"{stem}-latency.png"):
        images.append(f"{stem}-latency.png")
    if plot_throughput(report, out / f"{stem}-throughput.png"):
        images.append(f"{stem}-throughput.png")
    if plot_burst(report, out / f"{stem}-burst.png"):
        images.append(f"{stem}-burst.png")
    write_json(report, out / f"{stem}.json")
    text = write_markdown(report, out / f"{stem}.md", images)
    if readme is not None:
        prefix = out.relative_to(readme.parent) if out.is_relative_to(readme.parent) else out
        update_readme(readme, text.replace("](" + stem, f"]({prefix}/{stem}"))
    return text


def load_report(path: Path) -> Report:
    """Read a results JSON back (its checks are recomputed by the caller if needed)."""
    data = json.loads(path.read_text())
    measurements = [Measurement(**m) for m in data["measurements"]]
    sweeps = [SweepPoint(**p) for p in data["sweeps"]]
    checks = [
        Check(c["name"], c["measured"], c["target"], c["met"]) for c in data.get("checks", [])
    ]
    return Report(data["meta"], measurements, sweeps, checks)
