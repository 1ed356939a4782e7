"""Log seeded users in over HTTP to get the cookies and tokens the scenarios replay.

Credentials are obtained through the server's own API (never forged), so a scenario
that replays them measures exactly what a real client would cause.
"""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.seed import PASSWORD, email_of

__all__ = ["Client", "CredentialError", "TokenPair"]


class CredentialError(RuntimeError):
    """A login the harness needed was refused."""


@dataclass(frozen=True, slots=True)
class TokenPair:
    access: str
    refresh: str


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    cookies: list[str]
    body: dict[str, Any]


class Client:
    """A tiny blocking HTTP client for one server (setup only, never measured)."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 30.0) -> None:
        self.host = host
        self.port = port
        self._timeout = timeout_s

    def post(self, path: str, body: dict[str, Any]) -> Answer:
        """POST a JSON body; return the status, the Set-Cookie pairs and the JSON answer."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self._timeout)
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read()
            cookies = [
                value.split(";", 1)[0] for value in response.headers.get_all("Set-Cookie") or []
            ]
        finally:
            connection.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return Answer(response.status, cookies, parsed if isinstance(parsed, dict) else {})

    def hashing(self) -> tuple[float, int] | None:
        """Return the server's hashing CPU seconds and hashes so far, from its /metrics.

        None when the server has no such metrics (the Flask baseline, the bare ceiling app).
        """
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self._timeout)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        if response.status != 200 or "keystile_" not in text:
            return None
        cpu, hashes = 0.0, 0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "keystile_hash_cpu_seconds_total":
                    cpu += sample.value
                elif sample.name == "keystile_hash_duration_seconds_count":
                    hashes += int(sample.value)
        return cpu, hashes

    def has_route(self, path: str) -> bool:
        """Return whether POST `path` exists (anything but 404/405 for an empty body)."""
        return self.post(path, {}).status not in {404, 405}

    def _login(self, path: str, index: int) -> Answer:
        answer = self.post(path, {"email": email_of(index), "password": PASSWORD})
        if answer.status not in {200, 201}:
            raise CredentialError(f"POST {path} for {email_of(index)} answered {answer.status}")
        return answer

    def session_cookies(self, users: list[int]) -> list[str]:
        """Log each user in with a cookie session; return `Cookie: name=value` header lines."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda i: self._login("/v1/sessions", i), users))
        lines = []
        for answer in answers:
            if not answer.cookies:
                raise CredentialError("POST /v1/sessions set no cookie")
            lines.append("Cookie: " + "; ".join(answer.cookies))
        return lines

    def token_pairs(self, users: list[int]) -> list[TokenPair]:
        """Log each user in with the password grant; return their access/refresh tokens."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda i: self._login("/v1/tokens", i), users))
        return [TokenPair(a.body["access_token"], a.body["refresh_token"]) for a in answers]
