"""Re-render a run's Markdown and PNGs from its JSON (after a change to the report format).

    python -m bench.render bench/results/<run>.json [--readme]

Targets are re-evaluated from the measurements, so a fix to a check applies too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.checks import Check, evaluate, store_label
from bench.report import Report, load_report, publish

__all__ = ["main", "recheck"]


def main(argv: list[str] | None = None) -> int:
    """Rewrite `<run>.md` and the PNGs beside the JSON; with --readme, the README block too."""
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    parser.add_argument("results", type=Path, help="a bench/results/<run>.json")
    parser.add_argument("--readme", action="store_true", help="also update bench/README.md")
    args = parser.parse_args(argv)
    report = load_report(args.results)
    report.checks = recheck(report)
    readme = Path(__file__).resolve().parent / "README.md" if args.readme else None
    sys.stdout.write(publish(report, args.results.resolve().parent, readme))
    return 0


def recheck(report: Report) -> list[Check]:
    """Evaluate every target again from the run's measurements and parameters."""
    parameters = report.meta["parameters"]
    small, large = parameters["scale"]
    return evaluate(report.measurements, (store_label(small), store_label(large)), parameters)


if __name__ == "__main__":
    raise SystemExit(main())
