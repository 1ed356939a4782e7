"""The browser pages over HTTP: forms, CSRF tokens (S11), redirects (S12), caching (S20-S22)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from quart import Quart

from keystile.web.assets import StaticAssets
from tests.conftest import MakeApp
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

NEW_PASSWORD = "an entirely new passphrase"


async def _page(client: Client, path: str) -> tuple[str, str]:
    """GET a page; return its HTML and the CSRF token of its forms."""
    response = await client.get(path)
    assert response.status_code == 200, path
    html = await response.get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match is not None
    return html, match.group(1)


async def _form_login(client: Client, email: str, next_path: str = "/account") -> object:
    _, token = await _page(client, "/login")
    return await client.post(
        "/login",
        form={"email": email, "password": PASSWORD, "csrf_token": token, "next": next_path},
    )


async def _logged_in(app: Quart) -> tuple[Client, str]:
    client = app.test_client()
    email = unique_email()
    await register(client, email)
    response = await _form_login(client, email)
    assert response.status_code == 303  # type: ignore[attr-defined]
    return client, email


# --- register and log in -------------------------------------------------------------------


async def test_register_then_log_in_with_the_forms(client: Client) -> None:
    email = unique_email()
    html, token = await _page(client, "/register")
    assert '<label for="email">' in html
    assert '<label for="password">' in html
    response = await client.post(
        "/register",
        form={
            "email": email,
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "csrf_token": token,
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?notice=registered"
    notice, _ = await _page(client, response.headers["Location"])
    assert "its account now exists" in notice

    response = await _form_login(client, email)
    assert response.status_code == 303  # type: ignore[attr-defined]
    assert response.headers["Location"] == "/account"  # type: ignore[attr-defined]
    account, _ = await _page(client, "/account")
    assert email in account
    assert "this device" in account


async def test_wrong_password_shows_a_clear_message_and_sets_no_cookie(client: Client) -> None:
    email = unique_email()
    await register(client, email)
    _, token = await _page(client, "/login")
    response = await client.post(
        "/login", form={"email": email, "password": "not it at all", "csrf_token": token}
    )
    assert response.status_code == 401
    html = await response.get_data(as_text=True)
    assert "The email or password is incorrect." in html
    assert 'role="alert" id="form-error"' in html
    assert 'aria-describedby="form-error"' in html
    assert "keystile_session" not in response.headers.get("Set-Cookie", "")
    assert "not it at all" not in html  # the password is never echoed
    assert f'value="{email}"' in html  # the email is kept


async def test_invalid_fields_are_named_and_linked_to_their_inputs(client: Client) -> None:
    _, token = await _page(client, "/register")
    response = await client.post(
        "/register",
        form={
            "email": "not-an-email",
            "password": "short",
            "password_confirm": "other",
            "csrf_token": token,
        },
    )
    assert response.status_code == 422
    html = await response.get_data(as_text=True)
    assert 'id="email-error"' in html
    assert re.search(r'id="email"[^>]*aria-invalid="true"[^>]*aria-describedby="email-error"', html)
    assert "name@example.com" in html
    assert 'id="password_confirm-error"' in html


async def test_register_form_refuses_a_nul_byte_in_the_password_and_stores_nothing(
    app: Quart, client: Client
) -> None:
    # S24: the form refuses what the API's schema does, though it has no schema.
    email = unique_email()
    password = "correct horse\x00battery"
    _, token = await _page(client, "/register")
    response = await client.post(
        "/register",
        form={
            "email": email,
            "password": password,
            "password_confirm": password,
            "csrf_token": token,
        },
    )
    assert response.status_code == 422
    html = await response.get_data(as_text=True)
    assert "The password must not contain control characters." in html
    assert await services_of(app).users.select_user_by_email(email) is None


_FORM_POSTS = [
    "/login",
    "/register",
    "/forgot-password",
    "/reset-password",
    "/verify-email",
    "/verify-email/resend",
    "/undo-email-change",
    "/login/mfa",
    "/reauth",
    "/logout",
    "/account/password",
    "/account/email",
    "/account/verify-email",
    "/account/api-keys",
    "/account/logout-everywhere",
    "/account/mfa/totp",
    "/account/mfa/totp/confirm",
    "/account/mfa/totp/remove",
    "/account/mfa/recovery-codes",
]


@pytest.mark.parametrize("path", _FORM_POSTS)
@pytest.mark.parametrize(
    "body", [b"email=%FF%FEx%40example.com&password=x", b"email=\xff\xfex@example.com"]
)
async def test_every_form_refuses_invalid_utf8_with_400(app: Quart, path: str, body: bytes) -> None:
    # S24: percent-encoded or raw, a body that is not UTF-8 is malformed_request, as in
    # the JSON API, not a form read as empty or with U+FFFD in place (which said 401).
    client, _ = await _logged_in(app)
    response = await client.post(
        path, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 400, path
    html = await response.get_data(as_text=True)
    assert "The form could not be read: it is not valid UTF-8 text." in html


async def test_register_form_with_invalid_utf8_stores_nothing(app: Quart, client: Client) -> None:
    # S24: the password is refused before anything is read from the form, let alone stored.
    email = unique_email()
    _, token = await _page(client, "/register")
    body = f"email={email}&password=%FFcorrect+horse&password_confirm=%FFcorrect+horse"
    response = await client.post(
        "/register",
        data=f"{body}&csrf_token={token}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert await services_of(app).users.select_user_by_email(email) is None


async def test_a_weak_password_is_explained_on_registration(client: Client) -> None:
    _, token = await _page(client, "/register")
    response = await client.post(
        "/register",
        form={
            "email": unique_email(),
            "password": "short",
            "password_confirm": "short",
            "csrf_token": token,
        },
    )
    assert response.status_code == 422
    html = await response.get_data(as_text=True)
    assert re.search(r'id="password-error">.*at least 8', html)
    assert 'aria-describedby="password-hint password-error"' in html


# --- CSRF (S11) ----------------------------------------------------------------------------


async def test_login_form_without_a_csrf_token_is_refused(client: Client) -> None:
    # S11: missing token -> 403, even though the request looks same-site.
    email = unique_email()
    await register(client, email)
    await _page(client, "/login")  # the browser has its nonce cookie
    response = await client.post("/login", form={"email": email, "password": PASSWORD})
    assert response.status_code == 403
    assert "This form has expired" in await response.get_data(as_text=True)
    assert "keystile_session" not in response.headers.get("Set-Cookie", "")


async def test_forged_csrf_token_is_refused(client: Client) -> None:
    # S11: forged token -> 403.
    email = unique_email()
    await register(client, email)
    _, token = await _page(client, "/login")
    forged = ("0" if token[0] != "0" else "1") + token[1:]
    response = await client.post(
        "/login", form={"email": email, "password": PASSWORD, "csrf_token": forged}
    )
    assert response.status_code == 403


async def test_a_token_from_another_browser_is_refused(app: Quart) -> None:
    # S11: the attacker's own valid token does not fit the victim's nonce cookie.
    attacker, victim = app.test_client(), app.test_client()
    _, attacker_token = await _page(attacker, "/login")
    await _page(victim, "/login")
    email = unique_email()
    await register(victim, email)
    response = await victim.post(
        "/login", form={"email": email, "password": PASSWORD, "csrf_token": attacker_token}
    )
    assert response.status_code == 403


async def test_a_token_is_bound_to_the_session_it_was_rendered_for(app: Quart) -> None:
    # S11: a token from an earlier session of the same browser cannot act in a new one.
    client, email = await _logged_in(app)
    _, old_token = await _page(client, "/account")
    assert (await login(client, email)).status_code == 201  # a new session, same browser
    response = await client.post("/logout", form={"csrf_token": old_token})
    assert response.status_code == 403
    assert (await client.get("/v1/me")).status_code == 200


async def test_account_actions_without_a_valid_token_change_nothing(app: Quart) -> None:
    # S11: revoke, password change and log out everywhere all need the token.
    client, email = await _logged_in(app)
    other = app.test_client()
    assert (await _form_login(other, email)).status_code == 303  # type: ignore[attr-defined]
    html, _ = await _page(client, "/account")
    revoke_path = re.search(r'action="(/account/sessions/[0-9a-f-]+/revoke)"', html)
    assert revoke_path is not None
    attempts = {
        revoke_path.group(1): {},
        "/account/password": {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
        },
        "/account/logout-everywhere": {},
        "/logout": {},
    }
    for path, form in attempts.items():
        missing = await client.post(path, form=form)
        forged = await client.post(path, form={**form, "csrf_token": "f" * 64})
        assert missing.status_code == forged.status_code == 403, path
    assert (await other.get("/v1/me")).status_code == 200
    assert (await client.get("/v1/me")).status_code == 200


async def test_a_valid_token_from_another_site_is_still_refused(app: Quart) -> None:
    # S11: the Origin/Sec-Fetch-Site check stays in force for forms.
    client, _ = await _logged_in(app)
    _, token = await _page(client, "/account")
    response = await client.post(
        "/logout", form={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 403


# --- redirects after login (S12) ------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "/\t/evil.example",
    ],
)
async def test_login_never_redirects_off_site(app: Quart, target: str) -> None:
    # S12: open-redirect attempts land on the account page instead.
    client = app.test_client()
    email = unique_email()
    await register(client, email)
    response = await _form_login(client, email, next_path=target)
    assert response.status_code == 303  # type: ignore[attr-defined]
    assert response.headers["Location"] == "/account"  # type: ignore[attr-defined]
    page = await client.get("/login", query_string={"next": target})
    assert page.status_code == 303
    assert page.headers["Location"] == "/account"


async def test_login_goes_on_to_a_same_site_path(app: Quart) -> None:
    client = app.test_client()
    email = unique_email()
    await register(client, email)
    response = await _form_login(client, email, next_path="/account?tab=sessions")
    assert response.headers["Location"] == "/account?tab=sessions"  # type: ignore[attr-defined]


async def test_account_page_sends_visitors_to_log_in_first(client: Client) -> None:
    response = await client.get("/account")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=/account"


# --- the account page's actions ---------------------------------------------------------------


async def test_revoke_button_ends_the_other_session(app: Quart) -> None:
    client, email = await _logged_in(app)
    other = app.test_client()
    assert (await _form_login(other, email)).status_code == 303  # type: ignore[attr-defined]
    html, token = await _page(client, "/account")
    (path,) = re.findall(r'action="(/account/sessions/[0-9a-f-]+/revoke)"', html)
    response = await client.post(path, form={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/account?notice=session-revoked"
    assert (await other.get("/v1/me")).status_code == 401
    after, _ = await _page(client, response.headers["Location"])
    assert "That session has ended." in after
    assert "/revoke" not in after


async def test_password_change_form_explains_a_wrong_current_password(app: Quart) -> None:
    client, _ = await _logged_in(app)
    _, token = await _page(client, "/account")
    response = await client.post(
        "/account/password",
        form={
            "current_password": "wrong one here",
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
            "csrf_token": token,
        },
    )
    assert response.status_code == 401
    html = await response.get_data(as_text=True)
    assert re.search(r'id="current_password-error">.*The current password is incorrect', html)


async def test_password_change_form_is_limited_per_account(make_app: MakeApp) -> None:
    # S27 through the page: the form charges the same per-account allowance as the API.
    app = await make_app(rate_limit_password_change_per_account="2/hour")
    client, _ = await _logged_in(app)
    _, token = await _page(client, "/account")
    form = {
        "current_password": "wrong one here",
        "new_password": NEW_PASSWORD,
        "new_password_confirm": NEW_PASSWORD,
        "csrf_token": token,
    }
    responses = [await client.post("/account/password", form=form) for _ in range(3)]
    assert [response.status_code for response in responses] == [401, 401, 429]
    assert int(responses[-1].headers["Retry-After"]) > 0


async def test_register_form_is_limited_per_email(make_app: MakeApp) -> None:
    # S27 through the page: the register form counts each email as the API does.
    app = await make_app(rate_limit_register_per_account="1/hour")
    email = unique_email()
    statuses = []
    for _ in range(2):
        client = app.test_client()
        _, token = await _page(client, "/register")
        form = {
            "email": email,
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "csrf_token": token,
        }
        response = await client.post("/register", form=form, **from_ip(unique_ip()))
        statuses.append(response.status_code)
    assert statuses == [303, 429]
    assert int(response.headers["Retry-After"]) > 0


async def test_password_change_form_ends_other_sessions(app: Quart) -> None:
    # S3, through the page.
    client, email = await _logged_in(app)
    other = app.test_client()
    assert (await _form_login(other, email)).status_code == 303  # type: ignore[attr-defined]
    _, token = await _page(client, "/account")
    response = await client.post(
        "/account/password",
        form={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
            "csrf_token": token,
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/account?notice=password-changed"
    assert (await other.get("/v1/me")).status_code == 401
    assert (await client.get("/v1/me")).status_code == 200


async def test_log_out_button_ends_the_session_and_the_cookie_replay_is_refused(
    app: Quart,
) -> None:
    # S9, through the page.
    client, _ = await _logged_in(app)
    _, token = await _page(client, "/account")
    assert client.cookie_jar is not None
    (session_cookie,) = [c for c in client.cookie_jar if c.name == "keystile_session"]
    replay = {"Cookie": f"keystile_session={session_cookie.value}"}

    response = await client.post("/logout", form={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?notice=logged-out"
    assert (await app.test_client().get("/v1/me", headers=replay)).status_code == 401
    assert (await client.get("/account")).status_code == 303


async def test_log_out_everywhere_button_ends_every_session(app: Quart) -> None:
    client, email = await _logged_in(app)
    other = app.test_client()
    assert (await _form_login(other, email)).status_code == 303  # type: ignore[attr-defined]
    _, token = await _page(client, "/account")
    response = await client.post("/account/logout-everywhere", form={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?notice=logged-out-everywhere"
    assert (await other.get("/v1/me")).status_code == 401
    assert (await client.get("/v1/me")).status_code == 401


async def test_actions_after_the_session_ended_send_the_browser_to_log_in(app: Quart) -> None:
    client, _ = await _logged_in(app)
    _, token = await _page(client, "/account")
    assert (await client.delete("/v1/sessions/current")).status_code == 204
    response = await client.post("/account/logout-everywhere", form={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?notice=session-ended")


# --- caching (S20-S22) and static assets ---------------------------------------------------


async def test_pages_are_never_stored_and_vary_on_the_cookie(app: Quart) -> None:
    # S20, S21: pages set cookies or depend on them.
    client, _ = await _logged_in(app)
    for path in ("/login", "/register", "/account"):
        response = await client.get(path)
        assert response.headers["Cache-Control"] == "no-store", path
        assert {"Cookie", "Authorization"} <= set(response.vary), path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_static_assets_are_fingerprinted_and_cached_for_a_year(client: Client) -> None:
    # S22: public, immutable, no cookie, not caller-dependent.
    html, _ = await _page(client, "/login")
    match = re.search(r'href="(/static/style\.[0-9a-f]{16}\.css)"', html)
    assert match is not None
    response = await client.get(match.group(1))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.mimetype == "text/css"
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.vary
    assert (await client.get("/static/style.css")).status_code == 404


def test_a_changed_asset_gets_a_new_name(tmp_path: Path) -> None:
    (tmp_path / "style.css").write_text("body { color: black; }")
    before = StaticAssets(tmp_path).url("style.css")
    (tmp_path / "style.css").write_text("body { color: navy; }")
    after = StaticAssets(tmp_path).url("style.css")
    assert before != after
    assert re.fullmatch(r"/static/style\.[0-9a-f]{16}\.css", after)
