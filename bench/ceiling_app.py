"""The framework ceiling: a bare Quart route on keystile's own Hypercorn config.

It returns a JSON body shaped like `/v1/me`'s, with no auth, no database and no
middleware, so its rate is the most any request-bound keystile path could reach on
this machine with the same worker count. Run as
`python -m bench.ceiling_app --port P --workers N`; it starts Hypercorn exactly as
`keystile serve` does (same `hypercorn.toml`, only bind and workers replaced).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quart import Quart

__all__ = ["app", "main"]

_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_BODY = {
    "id": "00000000-0000-4000-8000-000000000000",
    "email": "bench-user-0@example.com",
    "authenticated_via": "none",
}

app = Quart("ceiling")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/me")
async def me() -> dict[str, str]:
    return _BODY


def main() -> int:
    """Serve the ceiling app with keystile's Hypercorn settings."""
    from hypercorn.config import Config
    from hypercorn.run import run

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    config = Config.from_toml(_PROJECT_ROOT / "hypercorn.toml")
    config.application_path = "bench.ceiling_app:app"
    config.bind = [f"{args.host}:{args.port}"]
    config.workers = args.workers
    return int(run(config) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
