"""A test-only extension with one route per caching behaviour under test.

Loaded by import path ("tests.probe_extension:ProbeExtension") in the Varnish test,
so it also exercises `settings.extensions`. It counts every request the origin
answers in Redis (`origin_hits_key`), before the response leaves, so a test behind
a cache can tell exactly what reached keystile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from quart import Blueprint, Response, jsonify, request, session
from quart.typing import ResponseReturnValue
from redis.asyncio import Redis

from keystile.container import Services
from keystile.web.auth import current_principal, get_principal, requires_session
from keystile.web.caching import add_surrogate_keys, http_cache, set_etag, set_last_modified
from keystile.web.context import services

blueprint = Blueprint("probe", __name__)

LAST_MODIFIED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def origin_hits_key(method: str, path_and_query: str, status: int) -> str:
    """Return the Redis key counting origin answers of this status to this request."""
    return f"probe:origin:{method} {path_and_query} {status}"


@dataclass(frozen=True)
class ProbeState:
    redis: Redis


@blueprint.after_app_request
async def _count_origin_hit(response: Response) -> Response:
    query = request.query_string.decode()
    target = request.path + (f"?{query}" if query else "")
    key = origin_hits_key(request.method, target, response.status_code)
    redis = services().extension(ProbeState).redis
    async with redis.pipeline(transaction=False) as pipe:
        await pipe.incr(key).expire(key, 600).execute()
    return response


@blueprint.get("/probe/public")
@http_cache(
    public=True,
    max_age=60,
    s_maxage=120,
    stale_while_revalidate=10,
    stale_if_error=600,
    vary=["Accept-Encoding"],
    surrogate_keys=["probe"],
)
async def public() -> ResponseReturnValue:
    add_surrogate_keys("probe-extra")
    set_last_modified(LAST_MODIFIED)
    return {"hello": "world"}


@blueprint.get("/probe/short")
@http_cache(public=True, max_age=1, s_maxage=1, surrogate_keys=["probe-short"])
async def short() -> ResponseReturnValue:
    return {"short": "lived"}


@blueprint.get("/probe/resilient")
@http_cache(public=True, max_age=1, s_maxage=1, stale_if_error=600)
async def resilient() -> ResponseReturnValue:
    return {"resilient": True}


@blueprint.get("/probe/supplied-etag")
@http_cache(public=True, max_age=60)
async def supplied_etag() -> ResponseReturnValue:
    set_etag("version-7")
    return {"version": 7}


@blueprint.get("/probe/missing")
@http_cache(public=True, max_age=60)
async def missing() -> ResponseReturnValue:
    return {"nothing": "here"}, 404


@blueprint.get("/probe/private")
@http_cache(public=False, max_age=60)
@requires_session
async def private() -> ResponseReturnValue:
    return {"email": get_principal().email}


@blueprint.get("/probe/public-reads-session")
@http_cache(public=True, max_age=60)
async def public_reads_session() -> ResponseReturnValue:
    principal = await current_principal()
    return {"signed_in": principal is not None}


@blueprint.get("/probe/public-sets-cookie")
@http_cache(public=True, max_age=60)
async def public_sets_cookie() -> ResponseReturnValue:
    response = jsonify({"tracking": True})
    response.set_cookie("tracker", "abc")
    return response


@blueprint.get("/probe/public-uses-quart-session")
@http_cache(public=True, max_age=60)
async def public_uses_quart_session() -> ResponseReturnValue:
    session["seen"] = True
    return {"seen": True}


@blueprint.get("/probe/cookie-by-hand")
async def cookie_by_hand() -> Response:
    """Bypasses http_cache, as a careless handler might: the app still sends no-store."""
    response = jsonify({"tracking": True})
    response.set_cookie("tracker", "abc")
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


@blueprint.get("/probe/shared-by-hand-after-session")
async def shared_by_hand_after_session() -> Response:
    """Reads the session and still asks shared caches to keep it: the app forbids that."""
    principal = await current_principal()
    response = jsonify({"signed_in": principal is not None})
    response.headers["Cache-Control"] = "max-age=60, s-maxage=60"
    response.headers["Surrogate-Key"] = "leak"
    return response


class ProbeExtension:
    name = "probe"

    def blueprints(self) -> Sequence[Blueprint]:
        return (blueprint,)

    @asynccontextmanager
    async def build(self, core: Services) -> AsyncIterator[ProbeState]:
        yield ProbeState(core.redis)
