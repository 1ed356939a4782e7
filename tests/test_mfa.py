"""Second factors: TOTP, recovery codes, the mfa_token step, amr and step-up (S39-S42)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import REGISTRY
from quart import Quart
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from keystile.container import Overrides
from keystile.errors import InvalidMfaCode
from keystile.services.types import ClientInfo
from keystile.stores.challenges import ChallengeStore
from keystile.stores.redis_batch import RedisBatch
from tests.support.http import PASSWORD, Client, login, register, services_of, unique_email
from tests.support.round_trips import round_trips
from tests.support.statements import Statements
from tests.support.tokens import bearer, claims_of, error_code, forge, grant, refresh
from tests.support.totp import Clock, code_at, enrolled_user, mfa_token

MakeApp = Callable[..., Awaitable[Quart]]


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock()


@pytest.fixture(name="mfa_app")
async def _mfa_app(make_app: MakeApp, clock: Clock) -> Quart:
    return await make_app(overrides=Overrides(mfa_clock=clock), mfa_free_failures=3)


async def audit_kinds(app: Quart, email: str) -> list[str]:
    user = await services_of(app).users.select_user_by_email(email)
    assert user is not None
    rows = await services_of(app).database.fetch(
        "SELECT kind FROM audit_events WHERE user_id = $1 ORDER BY id", user.id
    )
    return [row["kind"] for row in rows]


async def test_enrollment_needs_a_valid_code_and_seals_the_secret(
    mfa_app: Quart, clock: Clock
) -> None:
    # S39: enrollment completes only with a valid code; the secret is not stored in clear.
    client = mfa_app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    setup = await (await client.post("/v1/me/mfa/totp")).get_json()
    wrong = await client.post("/v1/me/mfa/totp/confirm", json={"code": "000000"})
    if code_at(setup["secret"], clock) != "000000":
        assert await error_code(wrong, 401) == "invalid_mfa_code"
    # Not confirmed: a password login still needs nothing more.
    assert (await login(mfa_app.test_client(), email)).status_code == 201
    right = await client.post(
        "/v1/me/mfa/totp/confirm", json={"code": code_at(setup["secret"], clock)}
    )
    codes = (await right.get_json())["recovery_codes"]
    assert len(set(codes)) == 10
    stored = await services_of(mfa_app).database.fetchval(
        "SELECT secret_sealed FROM mfa_totp t JOIN users u ON u.id = t.user_id WHERE u.email = $1",
        email,
    )
    assert setup["secret"].encode() not in stored
    assert "mfa_enrolled" in await audit_kinds(mfa_app, email)


async def test_password_alone_gives_an_mfa_token_and_no_session(
    mfa_app: Quart, clock: Clock
) -> None:
    # S42: the whole flow: 401 mfa_required -> code -> session.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email)
    assert answer["factors"] == ["totp", "recovery_code"]
    assert "Set-Cookie" not in (await login(client, email)).headers
    assert (await client.get("/v1/me")).status_code == 401
    done = await client.post(
        "/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock)}
    )
    assert done.status_code == 201, await done.get_data(as_text=True)
    me = await client.get("/v1/me")
    assert me.status_code == 200


async def test_tokens_after_the_second_step_carry_amr_and_auth_time(
    mfa_app: Quart, clock: Clock
) -> None:
    # S42: amr says pwd + otp, kept across a refresh; a password-only user has pwd.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email, tokens=True)
    done = await client.post(
        "/v1/tokens/mfa", json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock)}
    )
    assert done.status_code == 200, await done.get_data(as_text=True)
    pair = await done.get_json()
    claims = claims_of(pair["access_token"])
    assert claims["amr"] == ["otp", "pwd"]
    assert abs(claims["auth_time"] - time.time()) < 300
    again = await (await refresh(client, pair["refresh_token"])).get_json()
    assert claims_of(again["access_token"])["amr"] == ["otp", "pwd"]

    plain = unique_email()
    await register(client, plain)
    plain_pair = await (await grant(client, plain)).get_json()
    assert claims_of(plain_pair["access_token"])["amr"] == ["pwd"]


def hashes_run() -> float:
    """argon2 hashes and verifications this process has run (keystile_hash_duration_seconds)."""
    return sum(
        REGISTRY.get_sample_value("keystile_hash_duration_seconds_count", {"operation": operation})
        or 0.0
        for operation in ("hash", "verify")
    )


async def test_the_second_step_with_a_totp_code_runs_no_hash(mfa_app: Quart, clock: Clock) -> None:
    # A login with TOTP costs the password's hash and no other: the code is an HMAC.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email, tokens=True)
    before = hashes_run()
    assert before > 0  # registering and the first login were counted: the count is live
    done = await client.post(
        "/v1/tokens/mfa", json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock)}
    )
    assert done.status_code == 200, await done.get_data(as_text=True)
    assert hashes_run() == before


async def test_the_password_step_of_a_user_with_a_factor_writes_nothing_at_once(
    mfa_app: Quart, clock: Clock
) -> None:
    # Issue 12: like a failed login's, its mfa_challenged event goes out with the next batch.
    _, email, _, _ = await enrolled_user(mfa_app, clock)
    statements = Statements()
    await statements.observe(services_of(mfa_app).database.pool)
    await mfa_token(mfa_app.test_client(), email, tokens=True)
    writes = [query for query in statements.seen if "INSERT" in query or "UPDATE" in query]
    assert writes == [], writes
    await services_of(mfa_app).audit_admin.flush_pending()
    assert (await audit_kinds(mfa_app, email))[-1] == "mfa_challenged"


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v1/sessions/mfa", 201), ("/v1/tokens/mfa", 200)],
    ids=["session", "tokens"],
)
async def test_the_second_step_commits_the_login_with_both_its_events_in_one_statement(
    mfa_app: Quart, clock: Clock, path: str, status: int
) -> None:
    # Issue 12: the code's replay mark, then the session or token family with its
    # mfa_succeeded and login events in one statement; the user comes from the cache.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email, tokens=path == "/v1/tokens/mfa")
    statements = Statements()
    await statements.observe(services_of(mfa_app).database.pool)
    done = await client.post(
        path, json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock)}
    )
    assert done.status_code == status, await done.get_data(as_text=True)
    writes = [query for query in statements.seen if "INSERT" in query or "UPDATE" in query]
    assert len(writes) == 2, statements.seen
    assert "UPDATE mfa_totp" in writes[0]
    assert "INSERT INTO audit_events" in writes[1]
    assert not any("FROM users" in query for query in statements.seen), statements.seen
    assert (await audit_kinds(mfa_app, email))[-2:] == ["mfa_succeeded", "login"]


async def test_an_mfa_token_from_a_worker_of_the_previous_release_still_completes(
    mfa_app: Quart, clock: Clock
) -> None:
    # A rolling upgrade: the password step ran on a worker whose challenges named the
    # user by id only (no cache key); the second step here finds the user by id.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    user = await services_of(mfa_app).users.select_user_by_email(email)
    assert user is not None
    token = "a-token-of-the-previous-release"
    value = {"user": str(user.id), "mode": "tokens", "scope": None}
    await services_of(mfa_app).mfa.challenges.put(f"mfa-token:{token}", value, 60)
    done = await mfa_app.test_client().post(
        "/v1/tokens/mfa", json={"mfa_token": token, "code": code_at(secret, clock)}
    )
    assert done.status_code == 200, await done.get_data(as_text=True)


async def test_replayed_code_is_refused_and_audited(mfa_app: Quart, clock: Clock) -> None:
    # S39: a code accepted once is refused in its window.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    code = code_at(secret, clock)
    first = await mfa_token(client, email)
    ok = await client.post("/v1/sessions/mfa", json={"mfa_token": first["mfa_token"], "code": code})
    assert ok.status_code == 201
    second = await mfa_token(mfa_app.test_client(), email)
    replay = await client.post(
        "/v1/sessions/mfa", json={"mfa_token": second["mfa_token"], "code": code}
    )
    assert await error_code(replay, 401) == "invalid_mfa_code"
    assert "mfa_replay" in await audit_kinds(mfa_app, email)


async def test_one_code_checked_several_times_at_once_is_accepted_once(
    mfa_app: Quart, clock: Clock
) -> None:
    # S39: the replay check holds when the checks overlap (logins on several workers), not
    # only for a code sent again later: the recorded step is the arbiter.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    user = await services_of(mfa_app).users.select_user_by_email(email)
    assert user is not None
    codes = services_of(mfa_app).mfa.codes
    outcomes = await asyncio.gather(
        *(codes.verify_totp(user, code_at(secret, clock), ClientInfo()) for _ in range(4)),
        return_exceptions=True,
    )
    assert outcomes.count(None) == 1
    assert all(isinstance(outcome, InvalidMfaCode) for outcome in outcomes if outcome is not None)


@pytest.mark.parametrize(("skew", "accepted"), [(-1, True), (1, True), (-2, False), (2, False)])
async def test_one_step_of_clock_skew_is_accepted_and_two_are_not(
    mfa_app: Quart, clock: Clock, skew: int, accepted: bool
) -> None:
    # S39: +-1 step accepted, +-2 refused (injected clock).
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    clock.step(3)  # well past the enrollment's step, so -1 and -2 are not replays
    client = mfa_app.test_client()
    answer = await mfa_token(client, email)
    response = await client.post(
        "/v1/sessions/mfa",
        json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock, skew)},
    )
    if accepted:
        assert response.status_code == 201, await response.get_data(as_text=True)
    else:
        assert await error_code(response, 401) == "invalid_mfa_code"


async def test_wrong_codes_are_throttled_per_account_without_spending_the_token(
    mfa_app: Quart, clock: Clock
) -> None:
    # S39: after the free failures (3 here) the account backs off: 429 with Retry-After.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email)
    wrong = "999999" if code_at(secret, clock) != "999999" else "111111"
    statuses = []
    for _ in range(5):
        response = await client.post(
            "/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], "code": wrong}
        )
        statuses.append(response.status_code)
    assert statuses[:3] == [401, 401, 401]
    assert statuses[-1] == 429
    assert (
        int(response.headers["Retry-After"])
        <= services_of(mfa_app).settings.limits.backoff_max_seconds
    )
    assert "mfa_failed" in await audit_kinds(mfa_app, email)


async def test_a_recovery_code_works_once_and_is_stored_hashed(
    mfa_app: Quart, clock: Clock
) -> None:
    # S40: one-time, stored as HMAC, use audited.
    _, email, _, codes = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email, tokens=True)
    used = await client.post(
        "/v1/tokens/mfa",
        json={"mfa_token": answer["mfa_token"], "recovery_code": codes[0].upper()},
    )
    assert used.status_code == 200, await used.get_data(as_text=True)
    again = await mfa_token(client, email, tokens=True)
    reuse = await client.post(
        "/v1/tokens/mfa", json={"mfa_token": again["mfa_token"], "recovery_code": codes[0]}
    )
    assert await error_code(reuse, 401) == "invalid_mfa_code"
    stored = await services_of(mfa_app).database.fetch(
        "SELECT code_hmac FROM mfa_recovery_codes c JOIN users u ON u.id = c.user_id "
        "WHERE u.email = $1",
        email,
    )
    assert len(stored) == 10
    assert all(
        code.replace("-", "").encode() not in row["code_hmac"] for row in stored for code in codes
    )
    assert "mfa_recovery_code_used" in await audit_kinds(mfa_app, email)


async def _factor_notices(app: Quart, email: str) -> int:
    count: int = await services_of(app).database.fetchval(
        "SELECT count(*) FROM outbox WHERE recipient = $1 AND kind = 'factor_changed'", email
    )
    return count


async def test_using_a_recovery_code_tells_the_owner(mfa_app: Quart, clock: Clock) -> None:
    # S40: using one is notified (by mail), not only audited.
    _, email, _, codes = await enrolled_user(mfa_app, clock)
    before = await _factor_notices(mfa_app, email)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email)
    used = await client.post(
        "/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], "recovery_code": codes[0]}
    )
    assert used.status_code == 201, await used.get_data(as_text=True)
    assert await _factor_notices(mfa_app, email) == before + 1


async def test_regenerated_recovery_codes_replace_the_old_ones(
    mfa_app: Quart, clock: Clock
) -> None:
    # S40: regenerable; a code of the earlier set stops working.
    owner, email, _, old_codes = await enrolled_user(mfa_app, clock)
    regenerated = await owner.post("/v1/me/mfa/recovery-codes")
    assert regenerated.status_code == 200, await regenerated.get_data(as_text=True)
    new_codes = (await regenerated.get_json())["recovery_codes"]
    assert len(new_codes) == 10
    assert not set(new_codes) & set(old_codes)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email)
    stale = await client.post(
        "/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], "recovery_code": old_codes[0]}
    )
    assert await error_code(stale, 401) == "invalid_mfa_code"
    fresh = await client.post(
        "/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], "recovery_code": new_codes[0]}
    )
    assert fresh.status_code == 201, await fresh.get_data(as_text=True)


async def test_an_mfa_token_is_single_use_bound_to_its_user_and_its_kind(
    mfa_app: Quart, clock: Clock
) -> None:
    # S42: reuse, another user's token, and a session token at the token endpoint: refused.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    _, other_email, other_secret, _ = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email)
    # The other user's code does not complete this user's login.
    cross = await client.post(
        "/v1/sessions/mfa",
        json={"mfa_token": answer["mfa_token"], "code": code_at(other_secret, clock)},
    )
    if code_at(other_secret, clock) != code_at(secret, clock):
        assert await error_code(cross, 401) == "invalid_mfa_code"
    wrong_kind = await client.post(
        "/v1/tokens/mfa", json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock)}
    )
    assert await error_code(wrong_kind, 401) == "invalid_mfa_token"
    ok = await client.post(
        "/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock)}
    )
    assert ok.status_code == 201
    clock.step()
    reused = await client.post(
        "/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock)}
    )
    assert await error_code(reused, 401) == "invalid_mfa_token"
    assert other_email != email


async def test_two_second_steps_that_overlap_spend_the_mfa_token_once(
    mfa_app: Quart, clock: Clock
) -> None:
    # S42: single use when two second steps both passed their code check (the peek that
    # refuses a token reused later cannot see an overlapping one): the take decides.
    _, email, _, _ = await enrolled_user(mfa_app, clock)
    token = (await mfa_token(mfa_app.test_client(), email))["mfa_token"]
    mfa = services_of(mfa_app).mfa
    user, scope = await mfa.pending_user(token, "session")
    outcomes = await asyncio.gather(
        *(
            mfa.finish(token, user, ("pwd", "otp"), "session", scope, ClientInfo())
            for _ in range(2)
        ),
        return_exceptions=True,
    )
    assert sorted(type(outcome).__name__ for outcome in outcomes) == [
        "InvalidMfaToken",
        "SecondStep",
    ]


async def test_an_mfa_token_is_refused_once_its_user_is_disabled(
    mfa_app: Quart, clock: Clock
) -> None:
    # S42: the token is bound to an active user; disabling the account voids it.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email)
    await services_of(mfa_app).admin.disable_user(email)
    response = await client.post(
        "/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock)}
    )
    assert await error_code(response, 401) == "invalid_mfa_token"


async def test_challenges_expire_and_are_taken_once_in_redis_and_in_postgresql(
    mfa_app: Quart,
) -> None:
    # S41, S42: single use and short-lived, also with Redis away (PostgreSQL fallback).
    services = services_of(mfa_app)
    # Refused at once, and not retried: each call goes straight to its fallback.
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    try:
        stores = (
            services.mfa.challenges,
            ChallengeStore(dead, services.database),
            ChallengeStore(dead, services.database, batch=RedisBatch(dead)),
        )
        for store in stores:
            await store.put("once", {"a": 1}, 60)
            assert await store.peek("once") == {"a": 1}
            assert await store.take("once") == {"a": 1}
            assert await store.take("once") is None
            await store.put("short", {"a": 2}, 1)
            await asyncio.sleep(1.2)
            assert await store.take("short") is None
            assert await store.peek("short") is None
    finally:
        await dead.aclose()


async def test_sensitive_actions_need_a_recent_login(mfa_app: Quart, clock: Clock) -> None:
    # S42: step-up: an old login may not add a factor or change the password.
    client = mfa_app.test_client()
    email = unique_email()
    await register(client, email)
    user = await services_of(mfa_app).users.select_user_by_email(email)
    assert user is not None
    stale = forge(
        mfa_app, sub=str(user.id), epoch=user.token_epoch, auth_time=int(time.time()) - 3600
    )
    for method, path, body in (
        ("POST", "/v1/me/mfa/totp", None),
        (
            "POST",
            "/v1/me/password",
            {"current_password": "correct horse battery staple", "new_password": "x" * 20},
        ),
        ("POST", "/v1/me/email", {"new_email": unique_email(), "current_password": "x"}),
    ):
        response = await client.open(path, method=method, json=body, headers=bearer(stale))
        assert await error_code(response, 401) == "reauthentication_required"
    fresh = forge(mfa_app, sub=str(user.id), epoch=user.token_epoch, auth_time=int(time.time()))
    response = await client.post("/v1/me/mfa/totp", headers=bearer(fresh))
    assert response.status_code == 201


async def test_removing_the_last_factor_needs_a_current_code(mfa_app: Quart, clock: Clock) -> None:
    # S42: a recent login is not enough for the last factor; a fresh code is.
    client, email, secret, _ = await enrolled_user(mfa_app, clock)
    without = await client.delete("/v1/me/mfa/totp", json={})
    assert await error_code(without, 401) == "factor_required"
    removed = await client.delete("/v1/me/mfa/totp", json={"code": code_at(secret, clock)})
    assert removed.status_code == 204, await removed.get_data(as_text=True)
    # The login lookup's cached user forgot the factor: a password is enough again.
    assert (await login(mfa_app.test_client(), email)).status_code == 201
    kinds = await audit_kinds(mfa_app, email)
    assert "mfa_removed" in kinds
    mails = await services_of(mfa_app).database.fetch(
        "SELECT kind FROM outbox WHERE recipient = $1 AND kind = 'factor_changed'", email
    )
    assert len(mails) == 2  # added, removed


async def test_an_admin_resets_a_users_factors(mfa_app: Quart, clock: Clock) -> None:
    # S42, S45: the admin API lists the factors and resets them; audited with the admin.
    _, email, _, _ = await enrolled_user(mfa_app, clock)
    user = await services_of(mfa_app).users.select_user_by_email(email)
    assert user is not None
    admin = mfa_app.test_client()
    admin_email = unique_email()
    await register(admin, admin_email)
    await services_of(mfa_app).machine.roles.grant(admin_email, "admin")
    assert (await login(admin, admin_email)).status_code == 201
    shown = await (await admin.get(f"/v1/admin/users/{user.id}")).get_json()
    assert shown["factors"] == [{"kind": "totp"}]
    response = await admin.post(f"/v1/admin/users/{user.id}/reset-factors")
    assert response.status_code == 204, await response.get_data(as_text=True)
    assert (await login(mfa_app.test_client(), email)).status_code == 201
    assert "mfa_reset" in await audit_kinds(mfa_app, email)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match is not None
    return match.group(1)


async def _password_step_page(browser: Client, email: str, **form: str) -> tuple[str, str]:
    """Log in with the /login form; return the second step's page and its mfa_token."""
    form_page = await (await browser.get("/login")).get_data(as_text=True)
    answer = await browser.post(
        "/login",
        form={"email": email, "password": PASSWORD, "csrf_token": _csrf(form_page), **form},
    )
    html = await answer.get_data(as_text=True)
    assert answer.status_code == 200, html
    token_match = re.search(r'name="mfa_token" value="([A-Za-z0-9_-]+)"', html)
    assert token_match is not None
    return html, token_match.group(1)


async def _second_step_lands_on_account(
    browser: Client, html: str, mfa_token: str, code: str, next_path: str
) -> None:
    """Send the /login/mfa form with `next` = `next_path`: the session starts on /account."""
    done = await browser.post(
        "/login/mfa",
        form={"csrf_token": _csrf(html), "mfa_token": mfa_token, "code": code, "next": next_path},
    )
    assert done.status_code == 303, await done.get_data(as_text=True)
    assert done.headers["Location"] == "/account"
    assert (await browser.get("/v1/me")).status_code == 200


async def test_the_pages_set_up_an_app_and_ask_for_the_code_after_the_password(
    mfa_app: Quart, clock: Clock
) -> None:
    # S42 in the browser pages: account section, QR as inline SVG, /login/mfa step.
    client = mfa_app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    page = await (await client.get("/account")).get_data(as_text=True)
    assert "Two-factor authentication" in page
    started = await client.post("/account/mfa/totp", form={"csrf_token": _csrf(page)})
    html = await started.get_data(as_text=True)
    assert started.status_code == 201, html
    assert '<svg width="' in html
    secret_match = re.search(r'id="totp-secret">([A-Z2-7]+)<', html)
    assert secret_match is not None
    secret = secret_match.group(1)
    confirmed = await client.post(
        "/account/mfa/totp/confirm",
        form={"csrf_token": _csrf(html), "code": code_at(secret, clock)},
    )
    html = await confirmed.get_data(as_text=True)
    assert confirmed.status_code == 200, html
    assert html.count("<li><code>") == 10
    clock.step()

    browser = mfa_app.test_client()
    html, mfa_token = await _password_step_page(browser, email, next="/account")
    assert 'action="/login/mfa"' in html
    assert (await browser.get("/v1/me")).status_code == 401  # no session yet
    wrong = await browser.post(
        "/login/mfa",
        form={"csrf_token": _csrf(html), "mfa_token": mfa_token, "code": "12345"},
    )
    assert wrong.status_code == 401
    await _second_step_lands_on_account(
        browser, html, mfa_token, code_at(secret, clock), "/account"
    )


async def test_the_second_step_page_never_redirects_off_site(mfa_app: Quart, clock: Clock) -> None:
    # S12: the /login/mfa form's `next` is checked again; a tampered one lands on /account.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    browser = mfa_app.test_client()
    html, mfa_token = await _password_step_page(browser, email)
    code = code_at(secret, clock)
    await _second_step_lands_on_account(browser, html, mfa_token, code, "//evil.example/account")


async def test_the_second_step_makes_three_redis_round_trips(
    mfa_app: Quart, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 12: the mfa_token's read, the account's backoff, then the token taken and
    # the backoff cleared together (a right code ends it) in one pipeline.
    _, email, secret, _ = await enrolled_user(mfa_app, clock)
    client = mfa_app.test_client()
    answer = await mfa_token(client, email, tokens=True)
    with round_trips(monkeypatch) as sent:
        done = await client.post(
            "/v1/tokens/mfa",
            json={"mfa_token": answer["mfa_token"], "code": code_at(secret, clock)},
        )
    assert done.status_code == 200, await done.get_data(as_text=True)
    assert sent[0] == ["GET"], sent
    assert sent[1] in (["EVALSHA"], ["EVAL"]), sent
    assert Counter(sent[2]) == Counter({"DEL": 1, "GETDEL": 1}), sent
    assert len(sent) == 3, sent
