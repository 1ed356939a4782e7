"""Rate limits per client address and per account, shared through Redis (S26, S27)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from keystile.app import create_app
from keystile.embedded import EmbeddedRedis
from keystile.settings import Settings
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, Client, from_ip, register, unique_email, unique_ip
from tests.support.tokens import token_bytes, token_text


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(settings)
    async with app.test_app() as test_app:
        yield test_app  # type: ignore[misc]


WRONG = "not the password"


async def attempt(client: Client, email: str, password: str = WRONG, **kw: Any) -> Any:
    return await client.post("/v1/sessions", json={"email": email, "password": password}, **kw)


async def test_many_accounts_from_one_address_hit_the_per_address_limit(backing: Backing) -> None:
    # S27, from the issue: 200 accounts x 1 attempt from one address.
    settings = make_settings(backing, rate_limit_login_per_ip="20/minute")
    ip = unique_ip()
    async with serving(settings) as app:
        client = app.test_client()
        statuses = []
        for _ in range(200):
            statuses.append((await attempt(client, unique_email(), **from_ip(ip))).status_code)
        # 20 in a burst, then one per 3 s: the loop may earn one or two more.
        assert 20 <= statuses.count(401) <= 23, statuses
        assert statuses.count(429) == 200 - statuses.count(401)
        assert statuses[:20] == [401] * 20

        refused = await attempt(client, unique_email(), **from_ip(ip))
        assert refused.status_code == 429
        assert (await refused.get_json())["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 3
        assert refused.headers["RateLimit-Limit"] == "20"
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.headers["RateLimit-Policy"] == "20;w=60"

        # Another address is not affected.
        assert (await attempt(client, unique_email(), **from_ip(unique_ip()))).status_code == 401


async def test_allowed_responses_carry_the_ratelimit_headers(backing: Backing) -> None:
    settings = make_settings(backing, rate_limit_login_per_ip="5/minute")
    ip = unique_ip()
    async with serving(settings) as app:
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        response = await attempt(client, email, PASSWORD, **from_ip(ip))
        assert response.status_code == 201
        assert response.headers["RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Remaining"] == "4"
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 12


async def test_per_account_limit_counts_attempts_from_every_address(backing: Backing) -> None:
    # S27: the per-account limit holds however many addresses an attacker has.
    settings = make_settings(
        backing,
        trusted_proxy_hops=1,
        rate_limit_login_per_account="5/minute",
        login_backoff_client_free_failures=100,
        login_backoff_account_free_failures=100,
    )
    email = unique_email()
    async with serving(settings) as app:
        client = app.test_client()
        statuses = [
            (await attempt(client, email, headers={"X-Forwarded-For": unique_ip()})).status_code
            for _ in range(12)
        ]
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * 7


async def test_forged_x_forwarded_for_does_not_escape_the_limit_without_trusted_proxies(
    backing: Backing,
) -> None:
    # S26: with no trusted proxy the socket address is the key, whatever the header says.
    settings = make_settings(backing, rate_limit_login_per_ip="3/minute")
    ip = unique_ip()
    async with serving(settings) as app:
        client = app.test_client()
        statuses = [
            (
                await attempt(
                    client,
                    unique_email(),
                    headers={"X-Forwarded-For": unique_ip(), "Forwarded": f"for={unique_ip()}"},
                    **from_ip(ip),
                )
            ).status_code
            for _ in range(6)
        ]
    assert statuses == [401, 401, 401, 429, 429, 429]


async def test_forged_x_forwarded_for_does_not_escape_the_password_grant_limit(
    backing: Backing,
) -> None:
    # S26: POST /v1/tokens is admitted in the ASGI layer (web/login_refusal.py), which
    # reads the client address on its own; without trusted proxies it too ignores XFF.
    settings = make_settings(backing, rate_limit_token_per_ip="3/minute")
    ip = unique_ip()
    async with serving(settings) as app:
        client = app.test_client()
        statuses = [
            (
                await client.post(
                    "/v1/tokens",
                    json={"email": unique_email(), "password": WRONG},
                    headers={"X-Forwarded-For": unique_ip()},
                    **from_ip(ip),
                )
            ).status_code
            for _ in range(6)
        ]
    assert statuses == [401, 401, 401, 429, 429, 429]


async def test_a_password_grant_too_big_for_the_asgi_admission_counts_as_a_token_grant(
    backing: Backing,
) -> None:
    # S27: a body over LoginRefusal's 8 KiB (JSON padded with white space) skips the ASGI
    # admission; the handler then charges the limits itself, the token grant's ones.
    settings = make_settings(backing, rate_limit_token_per_ip="2/minute")
    ip = unique_ip()
    async with serving(settings) as app:
        client = app.test_client()
        statuses = []
        for _ in range(4):
            body = json.dumps({"email": unique_email(), "password": WRONG}) + " " * 9000
            response = await client.post(
                "/v1/tokens",
                data=body,
                headers={"Content-Type": "application/json"},
                **from_ip(ip),
            )
            statuses.append(response.status_code)
    assert statuses == [401, 401, 429, 429]


async def test_with_one_trusted_proxy_the_rightmost_forwarded_address_is_the_client(
    backing: Backing,
) -> None:
    # S26: the proxy appends the address it saw; anything left of it is the client's word.
    settings = make_settings(backing, trusted_proxy_hops=1, rate_limit_login_per_ip="2/minute")
    proxy, client_address = unique_ip(), unique_ip()
    async with serving(settings) as app:
        client = app.test_client()

        async def from_client(forged: str) -> int:
            headers = {"X-Forwarded-For": f"{forged}, {client_address}"}
            response = await attempt(client, unique_email(), headers=headers, **from_ip(proxy))
            return response.status_code

        assert [await from_client(unique_ip()) for _ in range(4)] == [401, 401, 429, 429]
        # A different real client behind the same proxy has its own allowance.
        other = await attempt(
            client, unique_email(), headers={"X-Forwarded-For": unique_ip()}, **from_ip(proxy)
        )
        assert other.status_code == 401


async def test_rfc7239_forwarded_header_when_configured(backing: Backing) -> None:
    # S26: with `forwarded_header = "Forwarded"`, X-Forwarded-For is the client's word.
    settings = make_settings(
        backing,
        trusted_proxy_hops=1,
        forwarded_header="Forwarded",
        rate_limit_login_per_ip="2/minute",
    )
    real = unique_ip()
    async with serving(settings) as app:
        client = app.test_client()
        statuses = []
        for _ in range(3):
            headers = {
                "Forwarded": f'for=192.0.2.43, for="[{real}]:4711";proto=https',
                "X-Forwarded-For": unique_ip(),
            }
            response = await attempt(client, unique_email(), headers=headers, **from_ip("::1"))
            statuses.append(response.status_code)
    assert statuses == [401, 401, 429]


async def test_two_app_instances_share_the_limit(backing: Backing) -> None:
    # S27: workers share counters through Redis, so alternating between them gains nothing.
    settings = make_settings(backing, rate_limit_login_per_ip="6/minute")
    ip = unique_ip()
    async with serving(settings) as first, serving(settings) as second:
        clients = [first.test_client(), second.test_client()]
        statuses = [
            (await attempt(clients[i % 2], unique_email(), **from_ip(ip))).status_code
            for i in range(10)
        ]
    assert statuses == [401] * 6 + [429] * 4


async def test_register_is_limited_alike_for_new_and_taken_emails(backing: Backing) -> None:
    # S6 + S27: the per-email register limit counts taken and new emails the same way.
    settings = make_settings(backing, rate_limit_register_per_account="2/hour")
    async with serving(settings) as app:
        client = app.test_client()
        taken = unique_email()
        await register(client, taken)
        new = unique_email()

        async def registering(email: str) -> tuple[int, str]:
            response = await client.post(
                "/v1/users", json={"email": email, "password": PASSWORD}, **from_ip(unique_ip())
            )
            return response.status_code, response.headers.get("RateLimit-Remaining", "")

        taken_answers = [await registering(taken) for _ in range(2)]
        new_answers = [await registering(new) for _ in range(3)]
    # The taken email had one registration already: its allowance is spent one sooner,
    # exactly as a new email's is after one registration.
    assert taken_answers == [(202, "0"), (429, "0")]
    assert new_answers == [(202, "1"), (202, "0"), (429, "0")]


async def test_register_is_limited_per_address(backing: Backing) -> None:
    settings = make_settings(backing, rate_limit_register_per_ip="3/hour")
    ip = unique_ip()
    async with serving(settings) as app:
        client = app.test_client()
        statuses = [
            (
                await client.post(
                    "/v1/users", json={"email": unique_email(), "password": PASSWORD}, **from_ip(ip)
                )
            ).status_code
            for _ in range(5)
        ]
    assert statuses == [202, 202, 202, 429, 429]


async def test_password_change_is_limited_per_account(backing: Backing) -> None:
    # S27: the owner's own allowance; a wrong current password spends it too.
    settings = make_settings(backing, rate_limit_password_change_per_account="3/hour")
    async with serving(settings) as app:
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        assert (await attempt(client, email, PASSWORD)).status_code == 201
        statuses = [
            (
                await client.post(
                    "/v1/me/password",
                    json={"current_password": "not it at all", "new_password": "x" * 20},
                )
            ).status_code
            for _ in range(4)
        ]
    assert statuses == [401, 401, 401, 429]


async def _token_pairs(client: Client, email: str, count: int) -> list[str]:
    """Return the refresh tokens of `count` password grants of `email`, each from a new address."""
    tokens = []
    for _ in range(count):
        body = {"email": email, "password": PASSWORD}
        response = await client.post("/v1/tokens", json=body, **from_ip(unique_ip()))
        assert response.status_code == 200, await response.get_data(as_text=True)
        tokens.append((await response.get_json())["refresh_token"])
    return tokens


async def _refresh_from_anywhere(client: Client, token: str) -> Any:
    return await client.post(
        "/v1/tokens/refresh", json={"refresh_token": token}, **from_ip(unique_ip())
    )


async def test_refresh_is_limited_per_account_across_addresses_and_logins(
    backing: Backing,
) -> None:
    # S27: every login of one account shares its refresh allowance, from any address;
    # the refused token is not spent, and other accounts are not held up.
    secret = secrets.token_hex(32)
    settings = make_settings(backing, secret_key=secret, rate_limit_refresh_per_account="2/minute")
    async with serving(settings) as app:
        client = app.test_client()
        email, other = unique_email(), unique_email()
        await register(client, email)
        await register(client, other)
        tokens = await _token_pairs(client, email, 3)
        (others,) = await _token_pairs(client, other, 1)
        first, second, third = [await _refresh_from_anywhere(client, t) for t in tokens]
        assert [first.status_code, second.status_code] == [200, 200]
        assert third.status_code == 429, await third.get_data(as_text=True)
        assert (await third.get_json())["error"]["code"] == "rate_limited"
        assert int(third.headers["Retry-After"]) >= 1
        assert (await _refresh_from_anywhere(client, others)).status_code == 200
    # Refused before it was spent: the same token still rotates where the limit allows.
    unlimited = make_settings(backing, secret_key=secret, rate_limit_refresh_per_account="off")
    async with serving(unlimited) as app:
        assert (await _refresh_from_anywhere(app.test_client(), tokens[2])).status_code == 200


async def test_a_refresh_token_naming_another_account_spends_none_of_its_allowance(
    backing: Backing,
) -> None:
    # S27: the account a token names counts only under the server's tag, so tokens made
    # up with the victim's id are refused (401) and the victim's refresh still passes.
    settings = make_settings(backing, rate_limit_refresh_per_account="1/minute")
    async with serving(settings) as app:
        client = app.test_client()
        victim, attacker = unique_email(), unique_email()
        await register(client, victim)
        await register(client, attacker)
        (victims,) = await _token_pairs(client, victim, 1)
        (attackers,) = await _token_pairs(client, attacker, 1)
        victim_id = token_bytes(victims)[1:17]
        forged = bytearray(token_bytes(attackers))
        forged[1:17] = victim_id  # the attacker's own tag no longer fits
        tampered = bytearray(token_bytes(victims))
        tampered[-1] ^= 0x01
        for made_up in (forged, tampered, forged):
            response = await _refresh_from_anywhere(client, token_text(made_up))
            assert response.status_code == 401, await response.get_data(as_text=True)
            assert (await response.get_json())["error"]["code"] == "invalid_refresh_token"
        assert (await _refresh_from_anywhere(client, victims)).status_code == 200


async def test_stopped_redis_falls_back_to_per_process_limits_without_500s(
    backing: Backing, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # S27 + S30: Redis away, limits still hold in this process, and it is logged.
    redis = EmbeddedRedis(tmp_path, persist=False)
    settings = make_settings(
        backing,
        redis_url=redis.start(),
        rate_limit_login_per_ip="4/minute",
        rate_limit_register_per_ip="100/minute",
    )
    ip = unique_ip()
    try:
        async with serving(settings) as app:
            client = app.test_client()
            email = unique_email()
            await register(client, email)
            redis.stop()
            with caplog.at_level(logging.WARNING, logger="keystile.stores.rate_limits"):
                statuses = [
                    (await attempt(client, email, PASSWORD, **from_ip(ip))).status_code
                    for _ in range(6)
                ]
            assert statuses == [201] * 4 + [429] * 2
            assert any("per process" in record.getMessage() for record in caplog.records)
            # Wrong passwords keep answering 401/429, never 500.
            wrong = [
                (await attempt(client, email, **from_ip(unique_ip()))).status_code for _ in range(3)
            ]
            assert set(wrong) <= {401, 429}
    finally:
        redis.stop()


async def _log_in_from(client: Client, ip: str) -> int:
    return int((await attempt(client, unique_email(), **from_ip(ip))).status_code)


async def _register_from(client: Client, ip: str) -> int:
    body = {"email": unique_email(), "password": PASSWORD}
    return int((await client.post("/v1/users", json=body, **from_ip(ip))).status_code)


@pytest.mark.parametrize(
    ("limit", "act", "allowed"),
    [
        ({"rate_limit_login_per_ip": "3/minute"}, _log_in_from, 401),
        # Not a login too: the login gate retries Redis by itself, every other limit
        # goes through the counters' circuit.
        ({"rate_limit_register_per_ip": "3/hour"}, _register_from, 202),
    ],
    ids=["login", "register"],
)
async def test_limits_are_shared_again_when_redis_returns(
    backing: Backing,
    tmp_path: Path,
    limit: dict[str, str],
    act: Callable[[Client, str], Awaitable[int]],
    allowed: int,
) -> None:
    # S30: recovers without a restart.
    redis = EmbeddedRedis(tmp_path, persist=False)
    settings = make_settings(
        backing, redis_url=redis.start(), rate_limit_redis_retry_seconds=0.2, **limit
    )
    ip = unique_ip()
    try:
        async with serving(settings) as first, serving(settings) as second:
            a, b = first.test_client(), second.test_client()
            redis.stop()
            assert await act(a, ip) == allowed  # counted in the first process only
            redis.start()  # again, on the port it had
            await asyncio.sleep(0.3)  # past the retry interval
            statuses = [await act([a, b][i % 2], ip) for i in range(5)]
            assert statuses == [allowed] * 3 + [429] * 2
    finally:
        redis.stop()


async def test_login_form_shares_the_limits_of_the_api(backing: Backing) -> None:
    # S27: the HTML form is no way around the limits; 429 shows the form again.
    settings = make_settings(backing, rate_limit_login_per_account="2/minute")
    email = unique_email()
    async with serving(settings) as app:
        client = app.test_client()
        assert (await attempt(client, email)).status_code == 401
        page = await client.get("/login")
        html = await page.get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
        assert match is not None
        form = {"email": email, "password": WRONG, "csrf_token": match.group(1)}
        assert (await client.post("/login", form=form)).status_code == 401
        refused = await client.post("/login", form=form)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert "Too many attempts" in await refused.get_data(as_text=True)
