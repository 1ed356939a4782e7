"""/metrics: Prometheus exposition for every worker, optionally behind a bearer token."""

from __future__ import annotations

import asyncio
import hmac

from quart import Blueprint, Response, request
from quart_schema import hide

from keystile import metrics
from keystile.errors import NotAuthenticated
from keystile.web.context import services

__all__ = ["blueprint"]

blueprint = Blueprint("metrics", __name__)


def _check_token(expected: str) -> None:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # Compare in constant time, so the answer's timing says nothing about the token.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        raise NotAuthenticated()


@blueprint.get("/metrics")
@hide
async def metrics_endpoint() -> Response:
    """Answer with the metrics of all workers; with `metrics_token` set, only to its holder."""
    token = services().settings.serving.metrics_token
    if token is not None:
        _check_token(token.get_secret_value())
    # Multiprocess mode reads every worker's files: keep that off the event loop.
    body, content_type = await asyncio.to_thread(metrics.render)
    return Response(body, content_type=content_type)
