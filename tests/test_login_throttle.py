"""Failed-login backoff: slows guessing, never locks the owner out for long (S6, S28)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from quart import Quart

from keystile.app import create_app
from keystile.container import Services
from keystile.embedded import EmbeddedRedis
from keystile.settings import Settings
from keystile.web.context import EXTENSION_KEY
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, Client, from_ip, register, unique_email, unique_ip

WRONG = "not the password"


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(settings)
    async with app.test_app() as test_app:
        yield test_app  # type: ignore[misc]


def services_of(test_app: Any) -> Services:
    """Return the services of a started app (`app.test_app()` wraps the Quart app)."""
    return test_app.app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


async def attempt(client: Client, email: str, password: str = WRONG, **kw: Any) -> Any:
    return await client.post("/v1/sessions", json={"email": email, "password": password}, **kw)


def via(ip: str) -> dict[str, Any]:
    """Arrive through one trusted proxy that saw the client at `ip`."""
    return {"headers": {"X-Forwarded-For": ip}}


async def test_one_account_guessed_from_many_addresses_backs_off_and_the_owner_gets_in_after(
    backing: Backing,
) -> None:
    # S28, from the issue: 1 account x 200 wrong passwords from 200 addresses.
    settings = make_settings(
        backing,
        trusted_proxy_hops=1,
        rate_limit_login_per_account="100000/minute",  # the backoff alone is under test
        login_backoff_account_free_failures=5,
        login_backoff_base_seconds=0.2,
        login_backoff_max_seconds=1.0,
    )
    async with serving(settings) as app:
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        started = time.monotonic()
        responses = [await attempt(client, email, **via(unique_ip())) for _ in range(200)]
        elapsed = time.monotonic() - started
        statuses = [response.status_code for response in responses]

        # 5 free failures, then waits of 0.2, 0.4, 0.8 s and 1 s after each further one.
        checked = statuses.count(401)
        assert statuses[:5] == [401] * 5
        assert 6 <= checked <= 5 + 3 + int(elapsed) + 1, (checked, elapsed)
        assert statuses.count(429) == 200 - checked
        refusal = next(r for r in reversed(responses) if r.status_code == 429)
        assert (await refusal.get_json())["error"]["code"] == "rate_limited"
        retry_after = int(refusal.headers["Retry-After"])
        assert retry_after == 1  # the longest delay, rounded up

        # The attack stops; after the backoff the owner logs in, even from a new address.
        await asyncio.sleep(retry_after)
        assert (await attempt(client, email, PASSWORD, **via(unique_ip()))).status_code == 201


async def test_owner_on_a_known_address_logs_in_while_the_account_is_under_attack(
    backing: Backing,
) -> None:
    # S28: an address the account logged in from before skips the per-account
    # backoff and has its own per-account allowance.
    settings = make_settings(
        backing,
        trusted_proxy_hops=1,
        rate_limit_login_per_account="5/minute",
        login_backoff_account_free_failures=3,
        login_backoff_base_seconds=60,
        login_backoff_max_seconds=600,
    )
    home = unique_ip()
    async with serving(settings) as app:
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        assert (await attempt(client, email, PASSWORD, **via(home))).status_code == 201

        statuses = [
            (await attempt(client, email, **via(unique_ip()))).status_code for _ in range(30)
        ]
        assert statuses.count(401) == 4  # then locked: 60 s and more
        # Even the right password from a stranger's address waits now ...
        assert (await attempt(client, email, PASSWORD, **via(unique_ip()))).status_code == 429
        # ... but the owner at home gets in at once.
        owner = app.test_client()
        assert (await attempt(owner, email, PASSWORD, **via(home))).status_code == 201
        assert (await owner.get("/v1/me")).status_code == 200


async def test_owner_on_a_known_address_logs_in_under_attack_while_redis_is_away(
    backing: Backing, tmp_path: Path
) -> None:
    # S28 on the per-process fallback (S30): the login gate's own path without Redis
    # (LoginThrottle.check) also lets a known address skip the account's backoff.
    redis = EmbeddedRedis(tmp_path, persist=False)
    settings = make_settings(
        backing,
        redis_url=redis.start(),
        trusted_proxy_hops=1,
        login_backoff_account_free_failures=2,
        login_backoff_base_seconds=60,
        login_backoff_max_seconds=600,
        rate_limit_redis_retry_seconds=600,
    )
    home = unique_ip()
    try:
        async with serving(settings) as app:
            client = app.test_client()
            email = unique_email()
            await register(client, email)
            redis.stop()
            assert (await attempt(client, email, PASSWORD, **via(home))).status_code == 201

            statuses = [
                (await attempt(client, email, **via(unique_ip()))).status_code for _ in range(4)
            ]
            assert statuses == [401, 401, 401, 429]  # 2 free, the 3rd starts 60 s
            assert (await attempt(client, email, PASSWORD, **via(unique_ip()))).status_code == 429
            owner = app.test_client()
            assert (await attempt(owner, email, PASSWORD, **via(home))).status_code == 201
    finally:
        redis.stop()


async def test_logged_in_owner_changes_password_while_logins_are_locked(backing: Backing) -> None:
    # S28: password change by the owner is never throttled by failed logins, even
    # those from the owner's own address.
    settings = make_settings(
        backing,
        trusted_proxy_hops=1,
        login_backoff_client_free_failures=2,
        login_backoff_account_free_failures=2,
        login_backoff_base_seconds=60,
        login_backoff_max_seconds=600,
    )
    home = unique_ip()
    async with serving(settings) as app:
        owner = app.test_client()
        email = unique_email()
        await register(owner, email)
        assert (await attempt(owner, email, PASSWORD, **via(home))).status_code == 201

        attacker = app.test_client()
        for ip in [home] * 4 + [unique_ip() for _ in range(4)]:
            await attempt(attacker, email, **via(ip))
        assert (await attempt(attacker, email, PASSWORD, **via(home))).status_code == 429

        response = await owner.post(
            "/v1/me/password",
            json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
            **via(home),
        )
        assert response.status_code == 204
        assert (await owner.get("/v1/me")).status_code == 200


async def test_throttled_answers_do_not_reveal_whether_the_account_exists(
    backing: Backing,
) -> None:
    # S6: the same statuses, bodies and headers for a registered and an unknown email.
    settings = make_settings(
        backing,
        rate_limit_login_per_account="6/minute",
        login_backoff_client_free_failures=3,
        login_backoff_base_seconds=60,
    )
    async with serving(settings) as app:
        client = app.test_client()
        taken = unique_email()
        await register(client, taken)

        async def answers(email: str) -> list[tuple[int, Any, bool, str]]:
            ip = unique_ip()
            result = []
            for _ in range(8):
                response = await attempt(client, email, **from_ip(ip))
                result.append(
                    (
                        response.status_code,
                        await response.get_json(),
                        "Retry-After" in response.headers,
                        response.headers.get("RateLimit-Remaining", ""),
                    )
                )
            return result

        known, unknown = await answers(taken), await answers(unique_email())
    assert known == unknown
    # 3 free failures, the 4th starts the backoff; the 7th also spends the account's limit.
    assert [status for status, *_ in known] == [401] * 4 + [429] * 4
    assert [remaining for *_, remaining in known] == ["5", "4", "3", "2", "1", "0", "0", "0"]


async def test_lockouts_and_rate_limit_refusals_are_audited_without_secrets(
    backing: Backing,
) -> None:
    settings = make_settings(
        backing,
        rate_limit_login_per_account="3/minute",
        login_backoff_client_free_failures=1,
        login_backoff_base_seconds=0.1,
    )
    ip = unique_ip()
    async with serving(settings) as app:
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        await attempt(client, email, **from_ip(ip))
        await attempt(client, email, **from_ip(ip))
        await asyncio.sleep(0.3)
        await attempt(client, email, **from_ip(ip))
        assert (await attempt(client, email, **from_ip(ip))).status_code == 429
        events = await services_of(app).audit_admin.tail(50, email)
        # A refusal before login knows no user: it is found by address.
        rows = await services_of(app).database.fetch(
            "SELECT kind, detail FROM audit_events WHERE ip = $1 AND kind = 'rate_limited'", ip
        )

    kinds = [event.kind for event in events]
    assert kinds.count("login_failed") == 3
    lockout = next(event for event in events if event.kind == "login_lockout")
    assert lockout.ip == ip
    assert lockout.detail["scope"] == "client"
    assert lockout.detail["delay_seconds"] > 0
    assert email not in str(lockout.detail)
    assert len(rows) == 1
    assert json.loads(rows[0]["detail"]) == {"action": "login", "scope": "account"}
    for event in events:
        assert WRONG not in str(event.detail)
        assert PASSWORD not in str(event.detail)
