"""schemathesis hooks (SCHEMATHESIS_HOOKS=tests.support.schemathesis_hooks) for test_openapi.

Every generated request carries a fresh bearer token and session cookie of a real
account, so the authenticated operations are tested past their 401, and
schemathesis's `ignored_auth` check can see what happens without them. The
account is named by KEYSTILE_ST_BASE, KEYSTILE_ST_EMAIL and KEYSTILE_ST_PASSWORD.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis


@schemathesis.auth(refresh_interval=2)  # "log out everywhere" in the run ends them
class KeystileAuth:
    """A bearer token and a session cookie, fetched by logging in."""

    def get(self, case: Any, ctx: Any) -> dict[str, str]:
        base = os.environ["KEYSTILE_ST_BASE"]
        body = {
            "email": os.environ["KEYSTILE_ST_EMAIL"],
            "password": os.environ["KEYSTILE_ST_PASSWORD"],
        }
        with httpx.Client(base_url=base, timeout=10) as http:
            token = http.post("/v1/tokens", json=body).raise_for_status().json()["access_token"]
            session = http.post("/v1/sessions", json=body).raise_for_status()
        cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
        return {"Authorization": f"Bearer {token}", "Cookie": cookie}

    def set(self, case: Any, data: dict[str, str], ctx: Any) -> None:
        case.headers = {**(case.headers or {}), **data}
