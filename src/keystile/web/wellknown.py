"""Public discovery documents: GET /.well-known/jwks.json and /.well-known/openid-configuration.

Both are the same for every caller and cacheable by a CDN or Varnish edge (hot path 5).
"""

from __future__ import annotations

import json

from quart import Blueprint, Response

from keystile.web.caching import CachePolicy, cache_response
from keystile.web.context import services
from keystile.web.openapi import responds

blueprint = Blueprint("wellknown", __name__)


async def _public(route: str, body: bytes, content_type: str = "application/json") -> Response:
    # Not `@http_cache`: the lifetimes are settings, known only once the app serves.
    settings = services().settings
    policy = CachePolicy(
        public=True,
        max_age=settings.tokens.jwks_max_age_seconds,
        s_maxage=settings.tokens.jwks_max_age_seconds,
        stale_while_revalidate=settings.tokens.jwks_stale_while_revalidate_seconds,
    )
    response = Response(body, status=200, content_type=content_type)
    return await cache_response(policy, response, route=route)


@blueprint.get("/.well-known/jwks.json")
@responds(
    200,
    "The JSON Web Key Set: next, current and previous public keys.",
    content_type="application/jwk-set+json",
    schema={"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}},
)
@responds(304)
async def jwks() -> Response:
    """Publish the public signing keys: next, current and previous (S19)."""
    return await _public("jwks", services().key_ring.jwks(), "application/jwk-set+json")


@blueprint.get("/.well-known/openid-configuration")
@responds(
    200,
    "OpenID Provider Metadata (RFC 8414): issuer, jwks_uri, endpoints, algorithms.",
    content_type="application/json",
    schema={"type": "object", "required": ["issuer", "jwks_uri"]},
)
@responds(304)
async def openid_configuration() -> Response:
    """Describe the issuer, where its keys are, and how its tokens are signed."""
    settings = services().settings
    issuer = settings.tokens.issuer.rstrip("/")
    algorithms = sorted(
        {key.alg for key in services().key_ring.all_keys()} | {settings.tokens.algorithm}
    )
    document = {
        "issuer": settings.tokens.issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/v1/tokens",
        "revocation_endpoint": f"{issuer}/v1/tokens/revoke",
        "grant_types_supported": ["password", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": sorted(settings.tokens.scopes),
        # keystile issues no ID tokens; this is the algorithm of its JWT access tokens,
        # under the name OpenID discovery clients read.
        "id_token_signing_alg_values_supported": algorithms,
    }
    return await _public("openid_configuration", json.dumps(document, sort_keys=True).encode())
