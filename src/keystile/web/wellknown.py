"""Public discovery documents: GET /.well-known/jwks.json and /.well-known/openid-configuration.

Both are the same for every caller and cacheable by a CDN or Varnish edge (hot path 5).
"""

from __future__ import annotations

import json

from quart import Blueprint, Response

from keystile.web.context import services
from keystile.web.public_cache import public_response

blueprint = Blueprint("wellknown", __name__)


def _public(body: bytes, content_type: str = "application/json") -> Response:
    settings = services().settings
    return public_response(
        body,
        content_type=content_type,
        max_age=settings.jwks_max_age_seconds,
        stale_while_revalidate=settings.jwks_stale_while_revalidate_seconds,
    )


@blueprint.get("/.well-known/jwks.json")
async def jwks() -> Response:
    """Publish the public signing keys: next, current and previous (S19)."""
    return _public(services().key_ring.jwks(), "application/jwk-set+json")


@blueprint.get("/.well-known/openid-configuration")
async def openid_configuration() -> Response:
    """Describe the issuer, where its keys are, and how its tokens are signed."""
    settings = services().settings
    issuer = settings.token_issuer.rstrip("/")
    algorithms = sorted(
        {key.alg for key in services().key_ring.all_keys()} | {settings.token_algorithm}
    )
    document = {
        "issuer": settings.token_issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/v1/tokens",
        "revocation_endpoint": f"{issuer}/v1/tokens/revoke",
        "grant_types_supported": ["password", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": sorted(settings.token_scopes),
        # keystile issues no ID tokens; this is the algorithm of its JWT access tokens,
        # under the name OpenID discovery clients read.
        "id_token_signing_alg_values_supported": algorithms,
    }
    return _public(json.dumps(document, sort_keys=True).encode())
