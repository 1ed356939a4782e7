"""The rule for tests that need a Debian binary: skip naming the package, fail under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.binaries import binary_path, requires_binary

ROOT = Path(__file__).resolve().parents[1]
MISSING = "keystile-no-such-binary"


def test_a_missing_binary_skips_naming_the_package_to_install() -> None:
    mark = requires_binary(MISSING, package="keystile-pkg", environ={})
    assert mark.name == "skip"
    assert mark.kwargs["reason"] == f"needs {MISSING}: apt-get install keystile-pkg"


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_binary_is_a_failure_not_a_skip(ci: str) -> None:
    mark = requires_binary(MISSING, package="keystile-pkg", environ={"CI": ci})
    assert mark.name == "requires_binary"
    assert mark.kwargs["missing"].startswith(f"needs {MISSING}: apt-get install keystile-pkg")


def test_a_present_binary_neither_skips_nor_fails(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    mark = requires_binary("tool", package="pkg", environ={"CI": "true"}, search_path=str(tmp_path))
    assert mark.name == "requires_binary"
    assert "missing" not in mark.kwargs
    assert binary_path("tool", search_path=str(tmp_path)) == str(tool)


@pytest.mark.parametrize(
    ("ci", "outcome", "exit_code"), [("", "1 skipped", 0), ("true", "1 error", 1)]
)
def test_a_pytest_run_skips_or_fails_on_a_missing_binary(
    tmp_path: Path, ci: str, outcome: str, exit_code: int
) -> None:
    test_file = tmp_path / "test_needs_tool.py"
    test_file.write_text(
        "from tests.support.binaries import requires_binary\n\n"
        f"@requires_binary({MISSING!r}, package='keystile-pkg')\n"
        "def test_runs_the_tool():\n"
        "    raise AssertionError('must not run')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(ROOT)}
    if ci:
        env["CI"] = ci
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.support.binaries",
            "-rsfE",
            "-q",
            "-p",
            "no:cacheprovider",
            str(test_file),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert outcome in result.stdout
    assert f"needs {MISSING}: apt-get install keystile-pkg" in result.stdout
    assert "Traceback" not in result.stdout
