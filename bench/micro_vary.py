"""Micro-benchmark: adding `Vary: Cookie, Authorization` to a response.

    .venv/bin/python -m bench.micro_vary

werkzeug's `response.vary` re-parses the header into a callback-backed set on every
access; keystile's `_add_vary` edits the header text. Prints microseconds per response
for each, net of building the response.
"""

from __future__ import annotations

import sys
import timeit

from quart import Response

from keystile.app import _add_vary

_NAMES = ("Cookie", "Authorization")


def _build() -> Response:
    return Response("{}", content_type="application/json")


def _via_vary_property() -> None:
    response = _build()
    for name in _NAMES:
        if name not in response.vary:
            response.vary.add(name)


def _via_add_vary() -> None:
    _add_vary(_build().headers, _NAMES)


def main(number: int = 20_000) -> None:
    base = timeit.timeit(_build, number=number) / number
    for label, func in (("response.vary", _via_vary_property), ("_add_vary", _via_add_vary)):
        net = timeit.timeit(func, number=number) / number - base
        sys.stdout.write(f"{label:>14}: {net * 1e6:5.1f} us per response\n")


if __name__ == "__main__":
    main()
