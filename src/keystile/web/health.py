"""/healthz (the process is alive) and /readyz (PostgreSQL and Redis answer in time)."""

from __future__ import annotations

import asyncio

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import hide

from keystile.errors import DependencyUnavailable
from keystile.stores import ping_redis
from keystile.web.context import services

blueprint = Blueprint("health", __name__)

_READY_DEADLINE_SECONDS = 1.0


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
    """Answer 200 only if every backing service answers within the deadline."""
    svc = services()
    results = await asyncio.gather(
        _check("postgresql", asyncio.ensure_future(svc.database.ping())),
        _check("redis", asyncio.ensure_future(ping_redis(svc.redis))),
    )
    failed = [name for name in results if name is not None]
    if failed:
        return {"status": "unavailable", "failed": failed}, 503
    return {"status": "ready"}
