"""PNG figures of a run (matplotlib, headless).

- `<run>-latency.png`: p50 and p99 latency of GET /v1/me against the connection
  count, for keystile, the baseline and the bare-Quart ceiling. A service that
  scales holds its p50 flat until the CPU saturates, then grows linearly (queueing).
- `<run>-throughput.png`: requests per second of every scenario, keystile next to
  the baseline, with the two ceilings; log scale, since logins are hash-bound.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt

from bench.report import Report

__all__ = ["plot_burst", "plot_latency", "plot_throughput"]

_COLOURS = {"keystile": "#1f77b4", "baseline": "#d62728", "ceiling": "#7f7f7f"}
_STYLES = {"me-bearer": "-", "me-cookie": "--", "framework-ceiling": ":"}


def plot_latency(report: Report, path: Path) -> bool:
    """Draw latency vs concurrency; return False when there was nothing to draw."""
    series: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for point in report.sweeps:
        series.setdefault((point.target, point.scenario), []).append(
            (point.connections, point.p50_ms, point.p99_ms)
        )
    if not series:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True)
    for (target, scenario), points in sorted(series.items()):
        points.sort()
        xs = [p[0] for p in points]
        for axis, column in ((axes[0], 1), (axes[1], 2)):
            axis.plot(
                xs,
                [p[column] for p in points],
                marker="o",
                color=_COLOURS.get(target, "black"),
                linestyle=_STYLES.get(scenario, "-"),
                label=f"{target}: {scenario}",
            )
    for axis, title in ((axes[0], "p50"), (axes[1], "p99")):
        axis.set_xscale("log", base=2)
        levels = sorted({p.connections for p in report.sweeps})
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.set_yscale("log")
        axis.set_xlabel("concurrent connections (closed loop, keep-alive)")
        axis.set_ylabel(f"{title} latency (ms, log)")
        axis.set_title(f"GET /v1/me {title} latency vs concurrency")
        axis.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left")
    figure.suptitle(_subtitle(report), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_throughput(report: Report, path: Path) -> bool:
    """Draw requests/s per scenario, keystile vs baseline, with the ceilings."""
    scenarios = [
        m.scenario
        for m in report.measurements
        if m.target == "keystile" and not m.scenario.startswith("scale-")
    ]
    if not scenarios:
        return False
    figure, axis = plt.subplots(figsize=(11, 5.5))
    width = 0.38
    ceilings = [
        (name, style, m.rps)
        for name, style in (("hash-ceiling", ":"), ("framework-ceiling", "--"))
        if (m := report.find("ceiling", name)) is not None and m.rps
    ]
    values = {
        target: [
            (m.rps or 0.0) if (m := report.find(target, scenario)) else 0.0
            for scenario in scenarios
        ]
        for target in ("keystile", "baseline")
    }
    everything = [v for vs in values.values() for v in vs if v] + [c[2] for c in ceilings]
    left, right = min(everything, default=1.0) / 3, max(everything, default=10.0) * 4
    for offset, target in ((-width / 2, "keystile"), (width / 2, "baseline")):
        bars = axis.barh(
            [i + offset for i in range(len(scenarios))],
            values[target],
            height=width,
            color=_COLOURS[target],
            label=target,
        )
        for bar, value in zip(bars, values[target], strict=True):
            axis.text(
                (value if value else left) * 1.08,
                bar.get_y() + bar.get_height() / 2,
                f"{value:,.0f}" if value else "skipped (endpoint not available)",
                va="center",
                fontsize=8,
            )
    for name, style, rate in ceilings:
        axis.axvline(
            rate, color=_COLOURS["ceiling"], linestyle=style, label=f"{name} {rate:,.0f}/s"
        )
    axis.set_xlim(left, right)
    axis.set_yticks(range(len(scenarios)), scenarios)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("requests per second (median of rounds, log scale; storm: reads during it)")
    axis.set_title(f"Throughput per scenario\n{_subtitle(report)}", fontsize=10)
    axis.legend(loc="lower right")
    axis.grid(True, axis="x", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_burst(report: Report, path: Path) -> bool:
    """Draw logins served over time during the burst, one line per target."""
    bursts = [m for m in report.measurements if m.scenario == "burst" and not m.skipped]
    if not bursts:
        return False
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for m in bursts:
        times = m.extra.get("success_at_s") or []
        axes.step(
            [0.0, *times],
            range(len(times) + 1),
            where="post",
            color=_COLOURS.get(m.target, "#2ca02c"),
            label=f"{m.target}: {m.extra['served']} served in {m.extra['drained_s']} s",
        )
    size = bursts[0].extra["size"]
    axes.axhline(size, color=_COLOURS["ceiling"], linestyle=":", linewidth=1)
    axes.set_xlabel("seconds since the burst was written")
    axes.set_ylabel("logins served (cumulative)")
    axes.set_title(f"Burst of {size} cold logins at once, clients honour Retry-After")
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.suptitle(_subtitle(report), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _subtitle(report: Report) -> str:
    meta = report.meta
    params = meta["parameters"]
    return (
        f"{meta['run_id']}: {meta['machine']['cores']} cores, {params['workers']} workers,"
        f" argon2id m={params['argon2_memory_kib']} KiB t={params['argon2_time_cost']}"
        f" p={params['argon2_parallelism']}"
    )
