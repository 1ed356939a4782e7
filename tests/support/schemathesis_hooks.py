"""schemathesis hooks (SCHEMATHESIS_HOOKS=tests.support.schemathesis_hooks) for test_openapi.

Every generated request carries a fresh bearer token and session cookie of a real
account, so the authenticated operations are tested past their 401, and
schemathesis's `ignored_auth` check can see what happens without them. The
account is named by KEYSTILE_ST_BASE, KEYSTILE_ST_EMAIL and KEYSTILE_ST_PASSWORD.
"""

from __future__ import annotations

import os
import time
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
        with httpx.Client(base_url=base, timeout=30) as http:
            token = _post(http, "/v1/tokens", body).json()["access_token"]
            session = _post(http, "/v1/sessions", body)
        cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
        return {"Authorization": f"Bearer {token}", "Cookie": cookie}

    def set(self, case: Any, data: dict[str, str], ctx: Any) -> None:
        case.headers = {**(case.headers or {}), **data}


def _post(http: httpx.Client, path: str, body: dict[str, str]) -> httpx.Response:
    """POST a login; a refusal that says when to come back (429, 503) is waited out."""
    deadline = time.monotonic() + 120
    while True:
        response = http.post(path, json=body)
        retry_after = response.headers.get("Retry-After")
        if response.status_code in (429, 503) and retry_after and time.monotonic() < deadline:
            time.sleep(min(float(retry_after), 5.0))
            continue
        if response.is_error:
            raise RuntimeError(f"{path}: {response.status_code} {response.text}")
        return response
