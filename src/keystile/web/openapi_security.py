"""The OpenAPI security schemes that `requires_auth` and the OAuth endpoints refer to.

Each operation lists, per scheme, the scopes it needs and the roles (`role:admin`):
`bearerAuth` is an access token (POST /v1/tokens or /v1/oauth/token) or an API key
(`ks_pat_...`); `clientBasic` is an OAuth client's id and secret (RFC 6749 2.3.1).
"""

from __future__ import annotations

from typing import Any

from quart_schema.openapi import APIKeySecurityScheme, HttpSecurityScheme, OAuth2SecurityScheme

from keystile.settings import Settings

__all__ = ["security_schemes"]


def security_schemes(settings: Settings, cookie_name: str) -> dict[str, Any]:
    """Return the components.securitySchemes of keystile's OpenAPI document."""
    scopes = {scope: f"the {scope} scope" for scope in settings.tokens.scopes}
    flows = {"clientCredentials": {"tokenUrl": "/v1/oauth/token", "scopes": scopes}}
    return {
        "bearerAuth": HttpSecurityScheme(scheme="bearer", bearer_format="JWT or ks_pat_ API key"),
        "sessionCookie": APIKeySecurityScheme(name=cookie_name, in_="cookie"),
        "clientCredentials": OAuth2SecurityScheme(flows=flows),
        "clientBasic": HttpSecurityScheme(scheme="basic"),
    }
