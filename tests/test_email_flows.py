"""Email flows over the API with a real SMTP server: each test reads the delivered message,
follows its link and finishes the flow over HTTP (S34-S37)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import statistics
import time
from typing import Any

import asyncpg
import pytest
from quart import Quart

from keystile.services.email_links import hash_link_token
from keystile.settings import Settings
from tests.mail_support import (
    PUBLIC_URL,
    SmtpServer,
    link_in,
    mail_settings,
    started_app,
    text_of,
    token_in,
)
from tests.support.http import (
    PASSWORD,
    Client,
    from_ip,
    login,
    register,
    services_of,
    unique_email,
    unique_ip,
)
from tests.support.tokens import bearer, claims_of, error_code, grant, refresh

NEW_PASSWORD = "a brand new passphrase for this account"


async def _reset_token(client: Client, smtp: SmtpServer, email: str, count: int = 1) -> str:
    response = await client.post("/v1/password-resets", json={"email": email})
    assert response.status_code == 202
    return token_in(await smtp.inbox.arrival(email, subject="Reset", count=count))


async def _confirm_reset(client: Client, token: str, password: str = NEW_PASSWORD) -> Any:
    return await client.post(
        "/v1/password-resets/confirm", json={"token": token, "new_password": password}
    )


async def _verification_token(smtp: SmtpServer, email: str, count: int = 1) -> str:
    return token_in(await smtp.inbox.arrival(email, subject="Confirm your email", count=count))


async def _me(client: Client, **request: Any) -> Any:
    return await client.get("/v1/me", **request)


async def _assert_password_unchanged(client: Client, email: str) -> None:
    assert (await login(client, email, PASSWORD)).status_code == 201


async def _audit_kinds(app: Quart, email: str) -> list[str]:
    rows = await services_of(app).database.fetch(
        "SELECT e.kind FROM audit_events e JOIN users u ON u.id = e.user_id "
        "WHERE lower(u.email) = lower($1) ORDER BY e.id",
        email,
    )
    return [row["kind"] for row in rows]


# --- password reset ------------------------------------------------------------------------


async def test_password_reset_ends_every_session_and_token_family_and_tells_the_user(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S37: a reset ends every session and token family; the user is notified.
    browser = mail_app.test_client()
    email = unique_email()
    await register(browser, email)
    assert (await login(browser, email)).status_code == 201
    api = mail_app.test_client()
    tokens = await (await grant(api, email)).get_json()

    token = await _reset_token(api, smtp, email)
    assert (await _confirm_reset(api, token)).status_code == 204

    assert (await _me(browser)).status_code == 401
    assert await error_code(await _me(api, headers=bearer(tokens["access_token"]))) == (
        "token_revoked"
    )
    assert await error_code(await refresh(api, tokens["refresh_token"])) == "invalid_refresh_token"
    assert (await login(api, email, PASSWORD)).status_code == 401
    assert (await login(api, email, NEW_PASSWORD)).status_code == 201
    notice = await smtp.inbox.arrival(email, subject="password was changed")
    assert "token=" not in text_of(notice)
    kinds = await _audit_kinds(mail_app, email)
    for kind in ("password_reset_requested", "mail_sent", "password_reset"):
        assert kind in kinds


async def test_forgot_password_answers_alike_for_known_unknown_and_disabled_accounts(
    mail_app: Quart,
) -> None:
    # S35: the same status, body and headers, whether or not the account exists.
    client = mail_app.test_client()
    known, disabled = unique_email(), unique_email()
    await register(client, known)
    await register(client, disabled)
    await services_of(mail_app).admin.disable_user(disabled)
    answers = []
    for email in (known, unique_email(), disabled):
        response = await client.post("/v1/password-resets", json={"email": email})
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in {"date", "x-request-id"}
        }
        answers.append((response.status_code, await response.get_data(), headers))
    assert answers[0][0] == 202
    assert answers[0] == answers[1] == answers[2]


async def test_forgot_password_for_a_disabled_account_queues_and_sends_no_mail(
    settings: Settings, smtp: SmtpServer
) -> None:
    # S35: a disabled account counts as absent: the answer is the unknown address's (above)
    # and no link is issued, queued or mailed (it would only be refused when followed).
    assert settings.database.url is not None
    disabled, known = unique_email(), unique_email()
    async with started_app(mail_settings(settings, smtp)) as app:
        client = app.test_client()
        for email in (disabled, known):
            await register(client, email)
            await smtp.inbox.arrival(email, subject="Confirm your email")
        await services_of(app).admin.disable_user(disabled)
        for email in (disabled, known):
            response = await client.post("/v1/password-resets", json={"email": email})
            assert response.status_code == 202
        await smtp.inbox.arrival(known, subject="Reset")
    # Shutdown waited for both requests' statements (answered before they ran).
    connection = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        rows = await connection.fetch(
            "SELECT o.kind FROM outbox o WHERE lower(o.recipient) = lower($1) "
            "UNION ALL SELECT t.purpose FROM email_tokens t JOIN users u ON u.id = t.user_id "
            "WHERE lower(u.email) = lower($1) AND t.purpose = 'reset_password'",
            disabled,
        )
    finally:
        await connection.close()
    assert [row["kind"] for row in rows] == ["verify_email"]  # from registering only
    assert [m["Subject"] for m in smtp.inbox.to(disabled) if "Reset" in m["Subject"]] == []


@pytest.mark.slow
async def test_forgot_password_takes_the_same_time_for_known_and_unknown_emails(
    settings: Settings,
) -> None:
    # S35: statistically the same time. The answer goes out before the statement that
    # looks the address up (it writes three more rows for an account) has run; each
    # sample starts once the one before has finished, so no sample carries another's.
    roomy = mail_settings(
        settings, None, outbox_sender_enabled=False, rate_limit_password_reset_per_account="off"
    )
    async with started_app(roomy) as app:
        client = app.test_client()
        known = unique_email()
        await register(client, known)
        detached = services_of(app).mail.flows.detached
        samples: dict[str, list[float]] = {"known": [], "unknown": []}
        attempts = [("known", known), ("unknown", None)]
        shuffler = random.Random(35)
        for _ in range(40):
            shuffler.shuffle(attempts)
            for kind, email in attempts:
                await detached.wait()
                started = time.perf_counter()
                response = await client.post(
                    "/v1/password-resets", json={"email": email or unique_email()}
                )
                samples[kind].append(time.perf_counter() - started)
                assert response.status_code == 202
    medians = {kind: statistics.median(values) for kind, values in samples.items()}
    assert max(medians.values()) < 1.5 * min(medians.values()), medians


async def test_a_reset_answered_just_before_shutdown_still_queues_its_mail(
    settings: Settings,
) -> None:
    # S35 answers before the statement runs; shutdown (SIGTERM included) lets it finish.
    # A lock on the account's row holds the statement back until shutdown has begun.
    assert settings.database.url is not None
    holder = await asyncpg.connect(settings.database.url.get_secret_value())
    email = unique_email()
    queued = "SELECT count(*) FROM outbox WHERE kind = 'password_reset' AND recipient = $1"
    try:
        async with started_app(mail_settings(settings, None, outbox_sender_enabled=False)) as app:
            await register(app.test_client(), email)
            await holder.execute("BEGIN")
            await holder.execute("SELECT 1 FROM users WHERE email = $1 FOR UPDATE", email)
            response = await app.test_client().post("/v1/password-resets", json={"email": email})
            assert response.status_code == 202
            assert await holder.fetchval(queued, email) == 0  # answered, not yet written
            release = asyncio.create_task(_commit_after(holder, 0.3))
        await release
        assert await holder.fetchval(queued, email) == 1
    finally:
        await holder.close()


async def _commit_after(connection: asyncpg.Connection, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await connection.execute("COMMIT")


async def test_reset_past_the_account_limit_answers_the_same_and_mails_nothing(
    settings: Settings, smtp: SmtpServer
) -> None:
    # S35: the per-account limit does not change the answer; the per-address one is a 429
    # for every email alike.
    limited = mail_settings(
        settings,
        smtp,
        rate_limit_password_reset_per_account="2/hour",
        rate_limit_password_reset_per_ip="6/hour",
    )
    async with started_app(limited) as app:
        client = app.test_client()
        known, unknown = unique_email(), unique_email()
        await register(client, known)
        ip = unique_ip()
        bodies = set()
        for email in (known, known, known, unknown, unknown, unknown):
            response = await client.post(
                "/v1/password-resets", json={"email": email}, **from_ip(ip)
            )
            assert response.status_code == 202
            bodies.add(await response.get_data())
        assert len(bodies) == 1
        queued = await services_of(app).database.fetchval(
            "SELECT count(*) FROM outbox WHERE lower(recipient) = lower($1) "
            "AND kind = 'password_reset'",
            known,
        )
        assert queued == 2
        for email in (known, unknown):
            response = await client.post(
                "/v1/password-resets", json={"email": email}, **from_ip(ip)
            )
            assert await error_code(response, 429) == "rate_limited"


async def test_links_are_built_from_the_public_url_never_the_host_header(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S36
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    await client.post(
        "/v1/password-resets", json={"email": email}, headers={"Host": "evil.example"}
    )
    message = await smtp.inbox.arrival(email, subject="Reset")
    assert link_in(message).startswith(f"{PUBLIC_URL}/reset-password?token=")
    assert "evil.example" not in message.as_string()


async def test_opening_a_reset_link_spends_nothing_and_sends_no_referrer(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S36: mail scanners follow links; only the form's POST spends the token.
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    token = await _reset_token(client, smtp, email)
    for _ in range(2):
        page = await client.get(f"/reset-password?token={token}")
        assert page.status_code == 200
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["Cache-Control"] == "no-store"
    assert (await _confirm_reset(client, token)).status_code == 204


# --- link tokens (S34) -----------------------------------------------------------------------


async def test_link_tokens_are_256_bits_and_only_their_hash_is_stored(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S34, S18: the token is nowhere in the database, neither in the token table nor the outbox.
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    token = await _reset_token(client, smtp, email)
    assert len(token) == 43  # 32 random bytes, base64url
    database = services_of(mail_app).database
    stored = await database.fetchval(
        "SELECT count(*) FROM email_tokens WHERE token_hash = $1",
        hashlib.sha256(token.encode()).digest(),
    )
    assert stored == 1
    dump = await database.fetchval("SELECT string_agg(t::text, ' ') FROM email_tokens t")
    outbox = await database.fetchval("SELECT string_agg(o::text, ' ') FROM outbox o")
    assert token not in (dump or "")
    assert token not in (outbox or "")


async def test_replayed_reset_token_is_refused(mail_app: Quart, smtp: SmtpServer) -> None:
    # S34: single use.
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    token = await _reset_token(client, smtp, email)
    assert (await _confirm_reset(client, token)).status_code == 204
    again = await _confirm_reset(client, token, "yet another passphrase here")
    assert await error_code(again, 400) == "invalid_token"
    assert (await login(client, email, NEW_PASSWORD)).status_code == 201


async def test_expired_reset_token_is_refused(mail_app: Quart, smtp: SmtpServer) -> None:
    # S34: short-lived.
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    token = await _reset_token(client, smtp, email)
    await services_of(mail_app).database.execute(
        "UPDATE email_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        hash_link_token(token),
    )
    assert await error_code(await _confirm_reset(client, token), 400) == "invalid_token"
    await _assert_password_unchanged(client, email)


async def _age_link(app: Quart, token: str, seconds: int) -> None:
    """Make a mailed link `seconds` older, as if the clock had moved on."""
    await services_of(app).database.execute(
        "UPDATE email_tokens SET expires_at = expires_at - $2 * interval '1 second' "
        "WHERE token_hash = $1",
        hash_link_token(token),
        seconds,
    )


async def _lifetime_left(app: Quart, token: str) -> float:
    left: float = await services_of(app).database.fetchval(
        "SELECT extract(epoch FROM expires_at - now())::float8 FROM email_tokens "
        "WHERE token_hash = $1",
        hash_link_token(token),
    )
    return left


_RESET_LIFETIME = 30 * 60  # the documented defaults (settings.toml), not read from Settings
_VERIFY_LIFETIME = 24 * 3600
_UNDO_LIFETIME = 7 * 86400


async def test_a_reset_link_works_until_its_default_lifetime_and_not_after(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S34: reset_token_ttl_seconds (30 minutes by default) reaches the link it bounds.
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    token = await _reset_token(client, smtp, email)
    await _age_link(mail_app, token, _RESET_LIFETIME - 10)
    assert (await _confirm_reset(client, token)).status_code == 204
    token = await _reset_token(client, smtp, email, count=2)
    await _age_link(mail_app, token, _RESET_LIFETIME + 1)
    refused = await _confirm_reset(client, token, "yet another passphrase here")
    assert await error_code(refused, 400) == "invalid_token"
    assert (await login(client, email, NEW_PASSWORD)).status_code == 201


async def test_verification_email_change_and_undo_links_last_their_default_lifetimes(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S34, S37: verify_token_ttl_seconds (24 h, also the email change link's) and
    # undo_token_ttl_seconds (7 days) reach the links they bound.
    client = mail_app.test_client()
    old, new = unique_email(), unique_email()
    await register(client, old)
    verify = await _verification_token(smtp, old)
    assert _VERIFY_LIFETIME - 60 < await _lifetime_left(mail_app, verify) <= _VERIFY_LIFETIME
    await _age_link(mail_app, verify, _VERIFY_LIFETIME - 10)
    response = await client.post("/v1/email-verifications/confirm", json={"token": verify})
    assert response.status_code == 204
    assert (await login(client, old)).status_code == 201
    await _change_email(client, new)
    change = token_in(await smtp.inbox.arrival(new, subject="new email address"))
    assert _VERIFY_LIFETIME - 60 < await _lifetime_left(mail_app, change) <= _VERIFY_LIFETIME
    await _age_link(mail_app, change, _VERIFY_LIFETIME + 1)
    refused = await client.post("/v1/email-verifications/confirm", json={"token": change})
    assert await error_code(refused, 400) == "invalid_token"
    await _change_email(client, new)
    change = token_in(await smtp.inbox.arrival(new, subject="new email address", count=2))
    await client.post("/v1/email-verifications/confirm", json={"token": change})
    undo = token_in(await smtp.inbox.arrival(old, subject="was changed"))
    assert _UNDO_LIFETIME - 60 < await _lifetime_left(mail_app, undo) <= _UNDO_LIFETIME


async def test_tokens_of_one_purpose_are_refused_for_another(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S34: bound to a purpose: a verification token resets nothing, a reset token verifies nothing.
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    verify = await _verification_token(smtp, email)
    assert await error_code(await _confirm_reset(client, verify), 400) == "invalid_token"
    await _assert_password_unchanged(client, email)
    reset = await _reset_token(client, smtp, email)
    response = await client.post("/v1/email-verifications/confirm", json={"token": reset})
    assert await error_code(response, 400) == "invalid_token"
    assert (await (await _me(client)).get_json())["email_verified"] is False
    # Both still work for what they are for.
    assert (
        await client.post("/v1/email-verifications/confirm", json={"token": verify})
    ).status_code == 204
    assert (await _confirm_reset(client, reset)).status_code == 204


async def test_another_users_token_is_refused_while_logged_in(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S34: bound to one user.
    alice, bob = mail_app.test_client(), mail_app.test_client()
    alice_email, bob_email = unique_email(), unique_email()
    await register(alice, alice_email)
    await register(bob, bob_email)
    assert (await login(bob, bob_email)).status_code == 201
    alice_token = await _verification_token(smtp, alice_email)
    response = await bob.post("/v1/email-verifications/confirm", json={"token": alice_token})
    assert await error_code(response, 400) == "invalid_token"
    assert (await (await _me(bob)).get_json())["email_verified"] is False
    assert (await login(alice, alice_email)).status_code == 201
    assert (await (await _me(alice)).get_json())["email_verified"] is False
    # The refusal spent nothing: Alice's own use of it still works.
    response = await alice.post("/v1/email-verifications/confirm", json={"token": alice_token})
    assert response.status_code == 204


async def test_reset_token_issued_before_a_password_change_is_refused(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S34: invalidated by a password change.
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    token = await _reset_token(client, smtp, email)
    assert (await login(client, email)).status_code == 201
    changed = await client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "changed by the owner meanwhile"},
    )
    assert changed.status_code == 204
    assert await error_code(await _confirm_reset(client, token), 400) == "invalid_token"
    assert (await login(client, email, "changed by the owner meanwhile")).status_code == 201
    await smtp.inbox.arrival(email, subject="password was changed")  # S37: notice on change


async def test_tampered_reset_token_is_refused(mail_app: Quart, smtp: SmtpServer) -> None:
    # S34
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    token = await _reset_token(client, smtp, email)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert await error_code(await _confirm_reset(client, tampered), 400) == "invalid_token"
    await _assert_password_unchanged(client, email)


async def test_a_newer_reset_token_voids_the_older_one(mail_app: Quart, smtp: SmtpServer) -> None:
    # S34: invalidated by a newer token of the same purpose.
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    older = await _reset_token(client, smtp, email)
    newer = await _reset_token(client, smtp, email, count=2)
    assert await error_code(await _confirm_reset(client, older), 400) == "invalid_token"
    await _assert_password_unchanged(client, email)
    assert (await _confirm_reset(client, newer)).status_code == 204


async def test_weak_new_password_is_refused_and_the_token_stays_usable(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    token = await _reset_token(client, smtp, email)
    assert await error_code(await _confirm_reset(client, token, "password"), 422) == (
        "weak_password"
    )
    assert (await _confirm_reset(client, token)).status_code == 204


# --- verification ----------------------------------------------------------------------------


async def test_registration_mails_a_link_that_verifies_the_address(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    message = await smtp.inbox.arrival(email, subject="Confirm your email")
    assert link_in(message).startswith(f"{PUBLIC_URL}/verify-email?token=")
    assert message.get_body(preferencelist=("html",)) is not None
    before = await (await grant(client, email)).get_json()
    assert claims_of(before["access_token"])["email_verified"] is False
    response = await client.post(
        "/v1/email-verifications/confirm", json={"token": token_in(message)}
    )
    assert response.status_code == 204
    me = await (await _me(client, headers=bearer(before["access_token"]))).get_json()
    assert me["email_verified"] is True
    # The claim follows on the next token, from a refresh as from a login.
    refreshed = await (await refresh(client, before["refresh_token"])).get_json()
    assert claims_of(refreshed["access_token"])["email_verified"] is True
    assert "email_verified" in await _audit_kinds(mail_app, email)


async def test_required_verification_refuses_login_until_the_address_is_confirmed(
    settings: Settings, smtp: SmtpServer
) -> None:
    async with started_app(mail_settings(settings, smtp, email_verification="required")) as app:
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        first = await _verification_token(smtp, email)
        assert await error_code(await login(client, email), 403) == "email_not_verified"
        assert await error_code(await grant(client, email), 403) == "email_not_verified"
        # A wrong password still answers like one: the 403 comes only after the password.
        assert await error_code(await login(client, email, "not the password at all")) == (
            "invalid_credentials"
        )
        # Locked out, the owner asks for a new link by address; the first one is void.
        response = await client.post("/v1/email-verifications", json={"email": email})
        assert response.status_code == 202
        second = await _verification_token(smtp, email, count=2)
        response = await client.post("/v1/email-verifications/confirm", json={"token": first})
        assert await error_code(response, 400) == "invalid_token"
        response = await client.post("/v1/email-verifications/confirm", json={"token": second})
        assert response.status_code == 204
        assert (await login(client, email)).status_code == 201


async def test_resend_by_address_answers_alike_for_unknown_and_verified_accounts(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S35
    client = mail_app.test_client()
    verified = unique_email()
    await register(client, verified)
    token = await _verification_token(smtp, verified)
    await client.post("/v1/email-verifications/confirm", json={"token": token})
    answers = set()
    for email in (verified, unique_email()):
        response = await client.post("/v1/email-verifications", json={"email": email})
        answers.add((response.status_code, await response.get_data()))
    assert answers == {(202, next(iter(answers))[1])}
    unauthenticated = await client.post("/v1/email-verifications")
    assert await error_code(unauthenticated, 401) == "not_authenticated"


async def test_authenticated_resend_mails_a_new_link(mail_app: Quart, smtp: SmtpServer) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    await _verification_token(smtp, email)
    tokens = await (await grant(client, email)).get_json()
    response = await client.post("/v1/email-verifications", headers=bearer(tokens["access_token"]))
    assert response.status_code == 202
    second = await _verification_token(smtp, email, count=2)
    response = await client.post("/v1/email-verifications/confirm", json={"token": second})
    assert response.status_code == 204


# --- email change ------------------------------------------------------------------------


async def _change_email(client: Client, new_email: str, password: str = PASSWORD) -> Any:
    return await client.post(
        "/v1/me/email", json={"new_email": new_email, "current_password": password}
    )


async def test_email_change_needs_the_password_and_takes_effect_when_the_new_address_confirms(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S37: confirmed by the new address; the old one is told.
    client = mail_app.test_client()
    old, new = unique_email(), unique_email()
    await register(client, old)
    assert (await login(client, old)).status_code == 201
    assert await error_code(await _change_email(client, new, "not my password")) == (
        "invalid_credentials"
    )
    response = await _change_email(client, new)
    assert response.status_code == 202
    assert (await (await _me(client)).get_json())["email"] == old
    message = await smtp.inbox.arrival(new, subject="new email address")
    response = await client.post(
        "/v1/email-verifications/confirm", json={"token": token_in(message)}
    )
    assert response.status_code == 204
    me = await (await _me(client)).get_json()
    assert (me["email"], me["email_verified"]) == (new, True)
    other = mail_app.test_client()
    assert (await login(other, new)).status_code == 201
    assert (await login(other, old)).status_code == 401
    notice = await smtp.inbox.arrival(old, subject="was changed")
    assert new in text_of(notice)
    assert link_in(notice).startswith(f"{PUBLIC_URL}/undo-email-change?token=")


async def test_undoing_an_email_change_restores_the_address_and_ends_every_session(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S37: the old address has the last word.
    client = mail_app.test_client()
    old, new = unique_email(), unique_email()
    await register(client, old)
    assert (await login(client, old)).status_code == 201
    await _change_email(client, new)
    change = token_in(await smtp.inbox.arrival(new, subject="new email address"))
    await client.post("/v1/email-verifications/confirm", json={"token": change})
    undo = token_in(await smtp.inbox.arrival(old, subject="was changed"))
    response = await client.post("/v1/email-changes/undo", json={"token": undo})
    assert response.status_code == 204
    assert (await _me(client)).status_code == 401
    other = mail_app.test_client()
    assert (await login(other, old)).status_code == 201
    assert (await login(other, new)).status_code == 401
    again = await client.post("/v1/email-changes/undo", json={"token": undo})
    assert await error_code(again, 400) == "invalid_token"


async def test_a_newer_email_change_link_voids_the_older_one(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S34: invalidated by a newer token of the same purpose, for links issued to a
    # logged-in account as for the forgot-password ones.
    client = mail_app.test_client()
    old, first, second = unique_email(), unique_email(), unique_email()
    await register(client, old)
    assert (await login(client, old)).status_code == 201
    assert (await _change_email(client, first)).status_code == 202
    older = token_in(await smtp.inbox.arrival(first, subject="new email address"))
    assert (await _change_email(client, second)).status_code == 202
    newer = token_in(await smtp.inbox.arrival(second, subject="new email address"))
    response = await client.post("/v1/email-verifications/confirm", json={"token": older})
    assert await error_code(response, 400) == "invalid_token"
    assert (await (await _me(client)).get_json())["email"] == old
    response = await client.post("/v1/email-verifications/confirm", json={"token": newer})
    assert response.status_code == 204
    assert (await (await _me(client)).get_json())["email"] == second


async def test_a_reset_link_mailed_to_a_former_address_is_refused(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S34: a reset link is bound to the address it went to; once the account has moved
    # to a new address, whoever still reads the old mailbox cannot take it over.
    client = mail_app.test_client()
    old, new = unique_email(), unique_email()
    await register(client, old)
    reset = await _reset_token(client, smtp, old)
    assert (await login(client, old)).status_code == 201
    await _change_email(client, new)
    change = token_in(await smtp.inbox.arrival(new, subject="new email address"))
    response = await client.post("/v1/email-verifications/confirm", json={"token": change})
    assert response.status_code == 204
    assert await error_code(await _confirm_reset(client, reset), 400) == "invalid_token"
    assert (await login(client, new, PASSWORD)).status_code == 201


async def _take_over_then_undo(smtp: SmtpServer, client: Client, old: str, new: str) -> str:
    """Move the account of `old` to `new`; return the undo token mailed to `old`."""
    await register(client, old)
    assert (await login(client, old)).status_code == 201
    await _change_email(client, new)
    change = token_in(await smtp.inbox.arrival(new, subject="new email address"))
    await client.post("/v1/email-verifications/confirm", json={"token": change})
    return token_in(await smtp.inbox.arrival(old, subject="was changed"))


async def test_undoing_an_email_change_ends_the_bearer_tokens_of_the_new_address(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S37: whoever took the account over with the new address loses its tokens too.
    client = mail_app.test_client()
    old, new = unique_email(), unique_email()
    undo = await _take_over_then_undo(smtp, client, old, new)
    api = mail_app.test_client()
    tokens = await (await grant(api, new)).get_json()
    assert (await _me(api, headers=bearer(tokens["access_token"]))).status_code == 200
    assert (await client.post("/v1/email-changes/undo", json={"token": undo})).status_code == 204
    assert await error_code(await _me(api, headers=bearer(tokens["access_token"]))) == (
        "token_revoked"
    )
    assert await error_code(await refresh(api, tokens["refresh_token"])) == "invalid_refresh_token"


async def test_undoing_an_email_change_voids_a_pending_change_link(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S37: a second change asked for before the undo cannot move the account away again.
    client = mail_app.test_client()
    old, new, next_one = unique_email(), unique_email(), unique_email()
    undo = await _take_over_then_undo(smtp, client, old, new)
    assert (await _change_email(client, next_one)).status_code == 202
    pending = token_in(await smtp.inbox.arrival(next_one, subject="new email address"))
    assert (await client.post("/v1/email-changes/undo", json={"token": undo})).status_code == 204
    other = mail_app.test_client()
    response = await other.post("/v1/email-verifications/confirm", json={"token": pending})
    assert await error_code(response, 400) == "invalid_token"
    assert (await login(other, old)).status_code == 201


async def test_email_change_to_a_taken_address_answers_alike_and_mails_nothing(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    client = mail_app.test_client()
    mine, taken = unique_email(), unique_email()
    await register(client, mine)
    await register(client, taken)
    assert (await login(client, mine)).status_code == 201
    first = await _change_email(client, taken)
    second = await _change_email(client, unique_email())
    assert (first.status_code, await first.get_data()) == (202, await second.get_data())
    queued = await services_of(mail_app).database.fetchval(
        "SELECT count(*) FROM outbox WHERE lower(recipient) = lower($1) AND kind = 'email_change'",
        taken,
    )
    assert queued == 0


# --- notices -------------------------------------------------------------------------------


async def test_login_from_an_address_not_seen_before_sends_a_notice(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    home, elsewhere = unique_ip(), unique_ip()
    for ip in (home, home, elsewhere, elsewhere):
        response = await client.post(
            "/v1/sessions", json={"email": email, "password": PASSWORD}, **from_ip(ip)
        )
        assert response.status_code == 201
    notice = await smtp.inbox.arrival(email, subject="New login")
    assert elsewhere in text_of(notice)
    queued = await services_of(mail_app).database.fetchval(
        "SELECT count(*) FROM outbox WHERE lower(recipient) = lower($1) AND kind = 'new_device'",
        email,
    )
    assert queued == 1  # not for the first login, not for a known address


async def test_notices_can_be_turned_off(settings: Settings, smtp: SmtpServer) -> None:
    quiet = mail_settings(settings, smtp, notify_new_device=False, notify_password_changed=False)
    async with started_app(quiet) as app:
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        for ip in (unique_ip(), unique_ip()):
            response = await client.post(
                "/v1/sessions", json={"email": email, "password": PASSWORD}, **from_ip(ip)
            )
            assert response.status_code == 201
        changed = await client.post(
            "/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        )
        assert changed.status_code == 204
        kinds = await services_of(app).database.fetch(
            "SELECT kind FROM outbox WHERE lower(recipient) = lower($1)", email
        )
        assert [row["kind"] for row in kinds] == ["verify_email"]


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/password-resets", {"email": "victim@example.com\r\nBcc: all@example.com"}),
        ("/v1/password-resets", {"email": "victim@example.com\nBcc: all@example.com"}),
        ("/v1/email-verifications", {"email": "a@example.com\r\nSubject: hi"}),
        ("/v1/password-resets", {"email": "x" * 320 + "@example.com"}),
        ("/v1/password-resets/confirm", {"token": "A" * 129, "new_password": NEW_PASSWORD}),
        ("/v1/password-resets/confirm", {"token": "A" * 43, "new_password": "p" * 5000}),
        ("/v1/password-resets/confirm", {"token": "not a token!", "new_password": NEW_PASSWORD}),
        ("/v1/email-verifications/confirm", {"token": "A" * 129}),
        ("/v1/email-changes/undo", {"token": "A\r\nB"}),
    ],
)
async def test_header_injection_and_overlong_fields_are_refused(
    mail_app: Quart, path: str, body: dict[str, str]
) -> None:
    client = mail_app.test_client()
    response = await client.post(path, json=body)
    assert await error_code(response, 422) == "validation_failed"
    count = await services_of(mail_app).database.fetchval(
        "SELECT count(*) FROM outbox WHERE recipient LIKE '%' || chr(10) || '%' "
        "OR recipient LIKE '%' || chr(13) || '%'"
    )
    assert count == 0


async def test_header_injection_in_a_new_email_is_refused(mail_app: Quart) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    response = await _change_email(client, "new@example.com\r\nBcc: all@example.com")
    assert await error_code(response, 422) == "validation_failed"
