"""Rotating the secret key: what was made under the old key keeps working while it is a
fallback (`secret_key_fallbacks`), what is made from then on is under the new one, and
without the fallback the old key's things stop, as before.

Each test is one deployment of its own (fresh keys, so signing keys of its own too),
restarted with another key: "A" is the key before the rotation, "B" the one after.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import jwt
from prometheus_client import REGISTRY
from pydantic import SecretStr
from quart import Quart

from keystile.app import create_app
from keystile.container import Overrides
from keystile.embedded import EmbeddedPostgres
from keystile.services.keys import SecretBox
from keystile.services.opaque_secrets import Hmac
from keystile.services.refresh_token_format import RefreshTokenFormat
from tests.machine_support import (
    MachineProbe,
    client_token,
    logged_in_user,
    machine_settings,
    new_key,
)
from tests.mail_support import SmtpServer, mail_settings, started_app
from tests.support.backing import Backing, make_settings
from tests.support.http import (
    PASSWORD,
    Client,
    login,
    register,
    services_of,
    unique_email,
)
from tests.support.tokens import bearer, error_code, grant, refresh
from tests.support.totp import Clock, code_at, enrolled_user, mfa_token


def _fallback_uses(purpose: str) -> float:
    sample = REGISTRY.get_sample_value(
        "keystile_secret_key_fallback_used_total", {"purpose": purpose}
    )
    return sample or 0.0


def _keys() -> tuple[str, str]:
    """Return the key before the rotation and the key after it."""
    return secrets.token_hex(32), secrets.token_hex(32)


@asynccontextmanager
async def _serving(
    backing: Backing,
    current: str,
    previous: Sequence[str] = (),
    *,
    overrides: Overrides | None = None,
    **settings: Any,
) -> AsyncIterator[Quart]:
    """Serve the deployment with `current` as its secret key and `previous` as fallbacks."""
    app = create_app(
        machine_settings(
            backing, secret_key=current, secret_key_fallbacks=list(previous), **settings
        ),
        overrides=overrides,
        extensions=[MachineProbe()],
    )
    async with app.test_app():
        yield app


def _client_with_cookies_of(app: Quart, browser: Client) -> Client:
    """Return a client of `app` holding the cookies `browser` got from an earlier process."""
    client = app.test_client()
    client.cookie_jar = browser.cookie_jar  # type: ignore[attr-defined]
    return client


async def test_a_session_cookie_signed_under_the_previous_key_still_logs_in(
    backing: Backing,
) -> None:
    old, new = _keys()
    async with _serving(backing, old) as before:
        browser, email = await logged_in_user(before)
        assert (await browser.get("/v1/me")).status_code == 200
    used = _fallback_uses("session_cookie")
    async with _serving(backing, new, [old]) as rotated:
        client = _client_with_cookies_of(rotated, browser)
        assert (await client.get("/v1/me")).status_code == 200
        assert _fallback_uses("session_cookie") == used + 1
        assert (await client.get("/v1/me")).status_code == 200  # remembered: counted once
        assert _fallback_uses("session_cookie") == used + 1
        # A new login's cookie is signed under the new key alone.
        fresh = rotated.test_client()
        assert (await login(fresh, email)).status_code == 201
    async with _serving(backing, new) as dropped:
        assert (await _client_with_cookies_of(dropped, browser).get("/v1/me")).status_code == 401
        assert (await _client_with_cookies_of(dropped, fresh).get("/v1/me")).status_code == 200
        # The user and credential caches written under the old key only miss.
        assert (await login(dropped.test_client(), email)).status_code == 201


async def _login_form(client: Client) -> str:
    page = await client.get("/login")
    html = await page.get_data(as_text=True)
    return html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


async def test_a_form_rendered_under_the_previous_key_still_posts(backing: Backing) -> None:
    # S11 stays: a token under a key the deployment no longer accepts is refused.
    old, new = _keys()
    async with _serving(backing, old) as before:
        browser = before.test_client()
        email = unique_email()
        await register(browser, email)
        token = await _login_form(browser)
    form = {"email": email, "password": "correct horse battery staple", "csrf_token": token}
    async with _serving(backing, new) as dropped:
        refused = await _client_with_cookies_of(dropped, browser).post("/login", form=form)
        assert refused.status_code == 403
    used = _fallback_uses("csrf")
    async with _serving(backing, new, [old]) as rotated:
        posted = await _client_with_cookies_of(rotated, browser).post("/login", form=form)
        assert posted.status_code == 303
        assert _fallback_uses("csrf") == used + 1
        later = rotated.test_client()
        later_form = {**form, "csrf_token": await _login_form(later)}
    # A page rendered with the fallback set carries a token under the new key alone.
    async with _serving(backing, new) as dropped:
        posted = await _client_with_cookies_of(dropped, later).post("/login", form=later_form)
        assert posted.status_code == 303


async def test_a_refresh_token_of_the_previous_key_rotates_once_into_the_new_key(
    backing: Backing,
) -> None:
    # S16 stays: one successor per token (the grace window answers with the same one).
    old, new = _keys()
    async with _serving(backing, old) as before:
        email = await _registered(before)
        issued = (await (await grant(before.test_client(), email)).get_json())["refresh_token"]
    async with _serving(backing, new) as dropped:
        assert await error_code(await refresh(dropped.test_client(), issued)) == (
            "invalid_refresh_token"
        )
    used = _fallback_uses("refresh_token")
    async with _serving(backing, new, [old]) as rotated:
        client = rotated.test_client()
        rotated_once = await refresh(client, issued)
        assert rotated_once.status_code == 200, await rotated_once.get_data(as_text=True)
        successor = (await rotated_once.get_json())["refresh_token"]
        again = await refresh(client, issued)  # the multi-tab race, inside the grace window
        assert (await again.get_json())["refresh_token"] == successor
        assert _fallback_uses("refresh_token") >= used + 1
    # The successor names its account under the new key, and needs the old one no more.
    assert RefreshTokenFormat(new.encode()).account_of(successor) is not None
    assert RefreshTokenFormat(old.encode()).account_of(successor) is None
    async with _serving(backing, new) as dropped:
        onward = await refresh(dropped.test_client(), successor)
        assert onward.status_code == 200, await onward.get_data(as_text=True)


async def test_a_refresh_token_of_the_previous_key_reused_later_revokes_its_family(
    backing: Backing,
) -> None:
    # S16: reuse detection holds for a token of the previous key.
    old, new = _keys()
    async with _serving(backing, old) as before:
        email = await _registered(before)
        issued = (await (await grant(before.test_client(), email)).get_json())["refresh_token"]
    async with _serving(backing, new, [old], refresh_reuse_grace_seconds=0) as rotated:
        client = rotated.test_client()
        successor = (await (await refresh(client, issued)).get_json())["refresh_token"]
        assert await error_code(await refresh(client, issued)) == "invalid_refresh_token"
        assert await error_code(await refresh(client, successor)) == "invalid_refresh_token"


async def test_refresh_tokens_issued_while_the_fallback_is_set_are_under_the_new_key(
    backing: Backing,
) -> None:
    old, new = _keys()
    async with _serving(backing, new, [old]) as rotated:
        email = await _registered(rotated)
        issued = (await (await grant(rotated.test_client(), email)).get_json())["refresh_token"]
    assert RefreshTokenFormat(new.encode()).account_of(issued) is not None
    assert RefreshTokenFormat(old.encode()).account_of(issued) is None


async def test_a_refresh_retried_on_a_worker_not_yet_rolled_gets_the_same_successor(
    backing: Backing,
) -> None:
    # S16 during the documented rolling restart: a worker on the new key (fallback old)
    # rotates a token; the client's retry, inside the grace window, lands on a worker
    # still on the old key (fallback new) and gets the same successor, not a revocation.
    old, new = _keys()
    async with _serving(backing, old) as before:
        email = await _registered(before)
        issued = (await (await grant(before.test_client(), email)).get_json())["refresh_token"]
    async with (
        _serving(backing, old, [new]) as not_rolled,
        _serving(backing, new, [old]) as rolled,
    ):
        first = await refresh(rolled.test_client(), issued)
        assert first.status_code == 200, await first.get_data(as_text=True)
        successor = (await first.get_json())["refresh_token"]
        retried = await refresh(not_rolled.test_client(), issued)
        assert retried.status_code == 200, await retried.get_data(as_text=True)
        assert (await retried.get_json())["refresh_token"] == successor
        onward = await refresh(not_rolled.test_client(), successor)
        assert onward.status_code == 200, await onward.get_data(as_text=True)
        # 20 parallel uses of one token, half on each kind of worker: one successor.
        token = (await (await grant(not_rolled.test_client(), email)).get_json())["refresh_token"]
        answers = await asyncio.gather(
            *(refresh(app.test_client(), token) for app in (rolled, not_rolled) * 10)
        )
        assert [answer.status_code for answer in answers] == [200] * 20
        assert len({(await answer.get_json())["refresh_token"] for answer in answers}) == 1


async def _registered(app: Quart) -> str:
    email = unique_email()
    await register(app.test_client(), email)
    return email


class _CountingHmac(Hmac):
    """Counts the digests `match` goes through (passed in, not patched)."""

    compared = 0

    def digests_under_each(self, text: str) -> list[bytes]:
        digests = super().digests_under_each(text)
        owner = self

        class _Counted(list[bytes]):
            def __iter__(self) -> Any:
                for digest in list.__iter__(self):
                    owner.compared += 1
                    yield digest

        return _Counted(digests)


def test_a_secret_is_compared_under_every_key_whichever_matches() -> None:
    # S43 (and S6 for a key's id): the same work whether the id is unknown (the dummy),
    # the secret matches under the current key, under a previous one, or not at all.
    old, older = secrets.token_bytes(32), secrets.token_bytes(32)
    current = secrets.token_bytes(32)
    stored_old = Hmac(old).digest("id.secret")
    for expected, under in (
        (Hmac(current).digest("id.secret"), 0),
        (stored_old, 1),
        (Hmac(older).digest("id.secret"), 2),
        (Hmac(current).digest("id.other"), None),
    ):
        digests = _CountingHmac(current, [old, older])
        assert digests.match("id.secret", expected) == under
        assert digests.match("id.secret", digests.dummy) is None
        assert digests.compared == 6
    # What is stored is under the current key alone.
    assert _CountingHmac(current, [old]).digest("id.secret") == Hmac(current).digest("id.secret")


async def test_an_api_key_of_the_previous_key_works_and_is_digested_again(
    backing: Backing,
) -> None:
    old, new = _keys()
    async with _serving(backing, old) as before:
        owner, _ = await logged_in_user(before)
        used_key = (await new_key(owner))["key"]
        idle_key = (await new_key(owner))["key"]
    async with _serving(backing, new) as dropped:
        refused = await dropped.test_client().get("/v1/me", headers=bearer(used_key))
        assert await error_code(refused) == "invalid_token"
    uses = _fallback_uses("api_key")
    async with _serving(backing, new, [old]) as rotated:
        allowed = await rotated.test_client().get("/v1/me", headers=bearer(used_key))
        assert allowed.status_code == 200
        assert _fallback_uses("api_key") == uses + 1
        again = await rotated.test_client().get("/v1/me", headers=bearer(used_key))
        assert again.status_code == 200
        assert _fallback_uses("api_key") == uses + 1  # stored under the new key now
    async with _serving(backing, new) as dropped:
        client = dropped.test_client()
        assert (await client.get("/v1/me", headers=bearer(used_key))).status_code == 200
        # Not used while the old key was a fallback: still under the old key, so refused.
        assert (await client.get("/v1/me", headers=bearer(idle_key))).status_code == 401


async def test_an_api_key_digested_again_is_served_through_an_outage_without_the_fallback(
    backing: Backing, private_postgres: tuple[EmbeddedPostgres, str]
) -> None:
    # S31 after a rotation: the outage copy (kept by a touch) must carry the new HMAC, or
    # once the fallback is dropped the key answers 401 while PostgreSQL is down.
    postgres, url = private_postgres
    outage = {"database_url": url, "db_acquire_timeout": 0.5, "db_connect_timeout": 0.5}
    old, new = _keys()
    async with _serving(backing, old, **outage) as before:
        owner, _ = await logged_in_user(before)
        key = (await new_key(owner))["key"]
    uses = _fallback_uses("api_key")
    async with _serving(backing, new, [old], **outage) as rotated:
        client = rotated.test_client()
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200
        assert _fallback_uses("api_key") == uses + 1  # the second use found the new HMAC
    async with _serving(backing, new, **outage) as dropped:
        postgres.pause()
        try:
            answer = await dropped.test_client().get("/v1/me", headers=bearer(key))
            assert answer.status_code == 200, await answer.get_data(as_text=True)
        finally:
            postgres.resume()


async def test_a_client_secret_of_the_previous_key_gets_tokens_and_is_digested_again(
    backing: Backing,
) -> None:
    old, new = _keys()
    async with _serving(backing, old) as before:
        clients = services_of(before).machine.clients
        used = await clients.create("used", ["reports"])
        idle = await clients.create("idle", ["reports"])
    used_id, idle_id = str(used.record.id), str(idle.record.id)
    async with _serving(backing, new) as dropped:
        refused = await client_token(dropped.test_client(), used_id, used.secret)
        assert refused.status_code == 401
        assert (await refused.get_json())["error"] == "invalid_client"
    uses = _fallback_uses("client_secret")
    async with _serving(backing, new, [old]) as rotated:
        granted = await client_token(rotated.test_client(), used_id, used.secret)
        assert granted.status_code == 200, await granted.get_data(as_text=True)
        assert _fallback_uses("client_secret") == uses + 1
        again = await client_token(rotated.test_client(), used_id, used.secret)
        assert again.status_code == 200, await again.get_data(as_text=True)
        assert _fallback_uses("client_secret") == uses + 1  # stored under the new key now
    async with _serving(backing, new) as dropped:
        client = dropped.test_client()
        assert (await client_token(client, used_id, used.secret)).status_code == 200
        assert (await client_token(client, idle_id, idle.secret)).status_code == 401


async def test_second_factors_enrolled_under_the_previous_key_still_work(
    backing: Backing,
) -> None:
    # S39, S40: the sealed TOTP secret opens (and is sealed again under the new key);
    # recovery codes match under the old key while it is a fallback.
    old, new = _keys()
    clock = Clock()
    overrides = Overrides(mfa_clock=clock)
    async with _serving(backing, old, overrides=overrides) as before:
        _, email, totp_secret, codes = await enrolled_user(before, clock)
    totp_uses, code_uses = _fallback_uses("totp_secret"), _fallback_uses("recovery_code")
    async with _serving(backing, new, [old], overrides=overrides) as rotated:
        client = rotated.test_client()
        by_code = await _second_step(client, email, recovery_code=codes[0])
        assert by_code.status_code == 201, await by_code.get_data(as_text=True)
        assert _fallback_uses("recovery_code") == code_uses + 1
        by_totp = await _second_step(client, email, code=code_at(totp_secret, clock))
        assert by_totp.status_code == 201, await by_totp.get_data(as_text=True)
        assert _fallback_uses("totp_secret") == totp_uses + 1
        clock.step()
    async with _serving(backing, new, overrides=overrides) as dropped:
        client = dropped.test_client()
        by_totp = await _second_step(client, email, code=code_at(totp_secret, clock))
        assert by_totp.status_code == 201, await by_totp.get_data(as_text=True)
        # Recovery codes cannot be digested again (only their HMAC is kept): refused.
        refused = await _second_step(client, email, recovery_code=codes[1])
        assert await error_code(refused) == "invalid_mfa_code"


async def test_a_login_half_done_under_the_previous_key_finishes_under_the_new_one(
    backing: Backing,
) -> None:
    # S42: the mfa_token the password step gave (before the rotation, or on a worker not
    # yet rolled) still finds its user at the second step, while the old key is a fallback.
    old, new = _keys()
    clock = Clock()
    overrides = Overrides(mfa_clock=clock)
    async with _serving(backing, old, overrides=overrides) as before:
        _, email, totp_secret, _ = await enrolled_user(before, clock)
        pending = (await mfa_token(before.test_client(), email))["mfa_token"]
    async with _serving(backing, new, [old], overrides=overrides) as rotated:
        finished = await rotated.test_client().post(
            "/v1/sessions/mfa", json={"mfa_token": pending, "code": code_at(totp_secret, clock)}
        )
        assert finished.status_code == 201, await finished.get_data(as_text=True)


async def test_a_password_change_on_a_rolled_worker_is_seen_by_one_not_yet_rolled(
    backing: Backing,
) -> None:
    # S3 during the documented rolling restart: old workers (current A, fallback B) beside
    # new ones (current B, fallback A) share the user cache, whose entries each names under
    # its own current key. A change on either must drop the other's entry too.
    old, new = _keys()
    async with (
        _serving(backing, old, [new]) as not_rolled,
        _serving(backing, new, [old]) as rolled,
    ):
        for changed_on, other in ((rolled, not_rolled), (not_rolled, rolled)):
            email = await _registered(changed_on)
            assert (await login(other.test_client(), email)).status_code == 201  # cached
            session = changed_on.test_client()
            assert (await login(session, email)).status_code == 201
            changed = await session.post(
                "/v1/me/password",
                json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
            )
            assert changed.status_code == 204
            assert (await login(other.test_client(), email)).status_code == 401
            again = await login(other.test_client(), email, "a brand new passphrase")
            assert again.status_code == 201


async def _second_step(client: Client, email: str, **factor: str) -> Any:
    answer = await mfa_token(client, email)
    return await client.post("/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], **factor})


async def test_a_signing_key_sealed_under_the_previous_key_keeps_signing(
    backing: Backing,
) -> None:
    # S19: the signing keys' own rotation then moves them under the new key.
    old, new = _keys()
    async with _serving(backing, old) as before:
        email = await _registered(before)
        kid = services_of(before).key_ring.signing_key().kid
        access = (await (await grant(before.test_client(), email)).get_json())["access_token"]
    uses = _fallback_uses("signing_key")
    async with _serving(backing, new, [old]) as rotated:
        services, client = services_of(rotated), rotated.test_client()
        assert _fallback_uses("signing_key") == uses + 1
        assert services.key_ring.signing_key().kid == kid  # no new key was made
        assert (await client.get("/v1/me", headers=bearer(access))).status_code == 200
        signed = (await (await grant(client, email)).get_json())["access_token"]
        assert jwt.get_unverified_header(signed)["kid"] == kid
        rotation, retiring = await services.key_ring.rotate(
            promote_after=timedelta(hours=1), retire_after=timedelta(hours=2)
        )
        assert retiring == [kid]
        stored = await services.database.fetchval(
            "SELECT secret_fingerprint FROM signing_keys WHERE kid = $1", rotation.kid
        )
        assert bytes(stored) == SecretBox(new.encode()).fingerprint
    async with _serving(backing, new) as dropped:
        # Without the old key, a key sealed under it is not this deployment's; the one
        # the rotation made opens under the new key alone.
        assert services_of(dropped).key_ring.verification_key(kid) is None
        rotated_in = services_of(dropped).key_ring.verification_key(rotation.kid)
        assert rotated_in is not None
        assert rotated_in.private_key is not None  # it will sign once promoted
        refused = await dropped.test_client().get("/v1/me", headers=bearer(access))
        assert refused.status_code == 401


async def test_mail_queued_under_the_previous_key_is_delivered(
    backing: Backing,
    private_postgres: tuple[EmbeddedPostgres, str],
    smtp: SmtpServer,
) -> None:
    # S38: no mail is lost to a rotation (a database of its own: see tests/test_outbox.py).
    old, new = _keys()
    queueing = make_settings(backing, database_url=private_postgres[1], secret_key=old)
    lost, kept = unique_email(), unique_email()
    connection: asyncpg.Connection = await asyncpg.connect(private_postgres[1])
    try:
        async with started_app(queueing) as before:  # no sender: the mail stays queued
            await register(before.test_client(), lost)
        async with started_app(mail_settings(queueing, smtp, secret_key=SecretStr(new))):
            dead = "SELECT dead_at IS NOT NULL FROM outbox WHERE recipient = $1"
            await _eventually(lambda: connection.fetchval(dead, lost))
        assert smtp.inbox.to(lost) == []
        async with started_app(queueing) as before:
            await register(before.test_client(), kept)
        uses = _fallback_uses("mail_outbox")
        rotated = mail_settings(
            queueing, smtp, secret_key=SecretStr(new), secret_key_fallbacks=[old]
        )
        async with started_app(rotated):
            await smtp.inbox.arrival(kept, subject="Confirm", within=30)
        assert _fallback_uses("mail_outbox") == uses + 1
        # Mail queued with the fallback set is sealed under the new key alone.
        later = unique_email()
        queued_rotated = make_settings(
            backing,
            database_url=private_postgres[1],
            secret_key=new,
            secret_key_fallbacks=[old],
        )
        async with started_app(queued_rotated) as rotated_app:
            await register(rotated_app.test_client(), later)
        async with started_app(mail_settings(queueing, smtp, secret_key=SecretStr(new))):
            await smtp.inbox.arrival(later, subject="Confirm", within=30)
    finally:
        await connection.close()


async def _eventually(check: Callable[[], Awaitable[Any]], *, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"condition not met within {within} s"
        await asyncio.sleep(0.05)
