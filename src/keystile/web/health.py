"""/healthz (the process is alive) and /readyz (PostgreSQL and Redis answer in time).

/readyz also answers 503 while the worker drains before shutting down (S32), so a
load balancer stops sending it new requests while the in-flight ones finish.
"""

from __future__ import annotations

import asyncio
import threading

from quart import Blueprint, Quart, current_app
from quart.typing import ResponseReturnValue
from quart_schema import hide

from keystile.errors import DependencyUnavailable
from keystile.stores import ping_redis
from keystile.web.context import services

__all__ = ["blueprint", "draining_flag"]

blueprint = Blueprint("health", __name__)

_READY_DEADLINE_SECONDS = 1.0
_DRAINING_KEY = "keystile.draining"


def draining_flag(app: Quart) -> threading.Event:
    """Return the app's draining flag: once set, /readyz answers 503 (set from any thread)."""
    flag = app.extensions.get(_DRAINING_KEY)
    if flag is None:
        flag = app.extensions[_DRAINING_KEY] = threading.Event()
    return flag


@blueprint.get("/healthz")
@hide
async def healthz() -> ResponseReturnValue:
    return {"status": "ok"}


async def _check(name: str, probe: asyncio.Future[None] | asyncio.Task[None]) -> str | None:
    try:
        await asyncio.wait_for(probe, timeout=_READY_DEADLINE_SECONDS)
    except (DependencyUnavailable, TimeoutError):
        return name
    return None


@blueprint.get("/readyz")
@hide
async def readyz() -> ResponseReturnValue:
    """Answer 200 only if every backing service answers within the deadline and not draining."""
    if draining_flag(current_app).is_set():
        return {"status": "draining"}, 503
    svc = services()
    results = await asyncio.gather(
        _check("postgresql", asyncio.ensure_future(svc.database.ping())),
        _check("redis", asyncio.ensure_future(ping_redis(svc.redis))),
    )
    failed = [name for name in results if name is not None]
    if failed:
        return {"status": "unavailable", "failed": failed}, 503
    return {"status": "ready"}
