"""Credentials for the machine-access scenarios, obtained through the server's own API.

`me-api-key` replays API keys that seeded users created with POST /v1/me/api-keys;
`client-credentials` replays the id and secret of clients an admin registered with
POST /v1/admin/clients (the admin is a seeded user given the role by `seed.grant_admin`).
"""

from __future__ import annotations

import base64
import http.client
import json
from typing import Any

from bench.credentials import Client, CredentialError
from bench.seed import ADMIN_USER

__all__ = ["api_key_lines", "client_lines"]


def _post(client: Client, path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    connection = http.client.HTTPConnection(client.host, client.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    if response.status != 201:
        raise CredentialError(f"POST {path} answered {response.status}: {raw[:200]!r}")
    answer: dict[str, Any] = json.loads(raw)
    return answer


def api_key_lines(client: Client, users: list[int]) -> list[str]:
    """Have each user create an API key; return `Authorization: Bearer ks_pat_...` lines."""
    lines = []
    for pair in client.token_pairs(users):
        body = {"name": "bench", "scopes": ["account"], "expires_in_days": 1}
        key = _post(client, "/v1/me/api-keys", body, pair.access)["key"]
        lines.append(f"Authorization: Bearer {key}")
    return lines


def client_lines(client: Client, count: int) -> list[str]:
    """Register `count` OAuth clients as the bench admin; return `Authorization: Basic` lines."""
    (admin,) = client.token_pairs([ADMIN_USER])
    lines = []
    for index in range(count):
        body = {"name": f"bench-{index}", "scopes": ["account"]}
        created = _post(client, "/v1/admin/clients", body, admin.access)
        raw = f"{created['client_id']}:{created['client_secret']}".encode()
        lines.append(f"Authorization: Basic {base64.b64encode(raw).decode()}")
    return lines
