"""The OpenAPI security schemes that `requires_auth` and the OAuth endpoints refer to."""

from __future__ import annotations

from typing import Any

from keystile.settings import Settings

__all__ = ["security_schemes"]


def security_schemes(settings: Settings, cookie_name: str) -> dict[str, Any]:
    """Return the components.securitySchemes of keystile's OpenAPI document.

    Each operation lists, per scheme, the scopes it needs and the roles (`role:admin`).
    """
    scopes = {scope: f"the {scope} scope" for scope in settings.token_scopes}
    return {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "An access token (POST /v1/tokens or /v1/oauth/token) or an API key "
                "(ks_pat_...); either must grant the scopes listed for the operation."
            ),
        },
        "sessionCookie": {"type": "apiKey", "in": "cookie", "name": cookie_name},
        "clientCredentials": {
            "type": "oauth2",
            "flows": {"clientCredentials": {"tokenUrl": "/v1/oauth/token", "scopes": scopes}},
        },
        "clientBasic": {
            "type": "http",
            "scheme": "basic",
            "description": "OAuth client id and secret (client_secret_basic, RFC 6749 2.3.1)",
        },
    }
