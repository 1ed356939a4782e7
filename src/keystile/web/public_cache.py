"""Public, cacheable responses: Cache-Control for browsers and edges, strong ETag, 304 (S22).

Meant for documents that are the same for every caller (JWKS, discovery). A
handler using it must not read cookies or Authorization, so nothing here varies
by caller and the app never adds Set-Cookie to it.
"""

from __future__ import annotations

import hashlib

from quart import Response, request

__all__ = ["public_response"]


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    # RFC 9110 13.1.2: If-None-Match uses the weak comparison, so W/ is ignored.
    candidates = (part.strip().removeprefix("W/") for part in if_none_match.split(","))
    return any(candidate in {etag, "*"} for candidate in candidates)


def public_response(
    body: bytes,
    *,
    content_type: str,
    max_age: int,
    stale_while_revalidate: int,
) -> Response:
    """Return `body` cacheable by anyone for `max_age` s, or 304 if the caller has it."""
    etag = _etag(body)
    cache_control = (
        f"public, max-age={max_age}, s-maxage={max_age}, "
        f"stale-while-revalidate={stale_while_revalidate}"
    )
    if _matches(request.headers.get("If-None-Match", ""), etag):
        response = Response(b"", status=304)
    else:
        response = Response(body, status=200, content_type=content_type)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = cache_control
    return response
