"""Tests that need a Debian binary (haproxy, varnishd, chromium, wrk, pgbouncer).

One rule for all of them: where the binary is missing, the tests are skipped at
collection with the package to install (`needs haproxy: apt-get install haproxy`);
but under `CI=true` a missing binary fails each such test at once, so CI can never
go green by skipping. This module is a pytest plugin (tests/conftest.py loads it):

    HAPROXY = binary_path("haproxy")
    pytestmark = [pytest.mark.slow, requires_binary("haproxy", package="haproxy")]
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

import pytest

__all__ = ["MARKER", "binary_path", "missing_reason", "requires_binary"]

MARKER = "requires_binary"
# Debian installs daemons in sbin, which a non-root PATH often lacks.
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def binary_path(name: str, *, search_path: str | None = None) -> str | None:
    """Return where executable `name` is: on PATH (or `search_path`), else in an sbin."""
    found = shutil.which(name, path=search_path)
    if found is not None or search_path is not None:
        return found
    return shutil.which(name, path=os.pathsep.join(_EXTRA_DIRS))


def missing_reason(name: str, package: str) -> str:
    """Return the message for a missing binary: what to install to get it."""
    return f"needs {name}: apt-get install {package}"


def _in_ci(environ: Mapping[str, str]) -> bool:
    return environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def requires_binary(
    name: str,
    *,
    package: str,
    environ: Mapping[str, str] | None = None,
    search_path: str | None = None,
) -> pytest.MarkDecorator:
    """Return the mark for tests that run `name` (from Debian package `package`).

    Present: a plain `requires_binary` mark. Missing: a skip naming the package, or,
    with CI=true in `environ` (default: the process environment), a mark that makes
    each test fail in setup with the same message.
    """
    environ = os.environ if environ is None else environ
    if binary_path(name, search_path=search_path) is not None:
        return pytest.mark.requires_binary(name)
    reason = missing_reason(name, package)
    if _in_ci(environ):
        return pytest.mark.requires_binary(
            name, missing=f"{reason} (CI=true: a missing binary is a failure, not a skip)"
        )
    return pytest.mark.skip(reason=reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(name): runs a Debian binary; skipped without it, failed in CI"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(MARKER):
        missing = mark.kwargs.get("missing")
        if missing:
            pytest.fail(missing, pytrace=False)
