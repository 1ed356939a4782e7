"""The email pages over HTTP with a real SMTP server: forms, CSRF, no-referrer (S36), GETs
that spend nothing, and the account page's email section."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from quart import Quart

from keystile.services.email_links import hash_link_token
from keystile.settings import Settings
from tests.mail_support import SmtpServer, link_in, mail_settings, started_app, token_in
from tests.support.http import PASSWORD, Client, register, services_of, unique_email

NEW_PASSWORD = "an entirely new passphrase"


async def _page(client: Client, path: str, status: int = 200) -> tuple[str, str, Any]:
    """GET a page; return its HTML, the CSRF token of its forms, and the response."""
    response = await client.get(path)
    assert response.status_code == status, path
    html = await response.get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    return html, match.group(1) if match else "", response


async def _form_login(client: Client, email: str, password: str = PASSWORD) -> Any:
    _, csrf, _ = await _page(client, "/login")
    return await client.post(
        "/login",
        form={"email": email, "password": password, "csrf_token": csrf, "next": "/account"},
    )


def _path(link: str) -> str:
    """Return the path and query of a mailed link, to follow it on the test client."""
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


async def test_login_page_links_to_forgot_password(client: Client) -> None:
    html, _, _ = await _page(client, "/login")
    assert '<a href="/forgot-password">Forgot your password?</a>' in html


async def test_forgot_password_then_reset_with_the_forms(mail_app: Quart, smtp: SmtpServer) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    html, csrf, _ = await _page(client, "/forgot-password")
    assert '<label for="email">' in html
    response = await client.post("/forgot-password", form={"email": email, "csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?notice=reset-sent"

    link = link_in(await smtp.inbox.arrival(email, subject="Reset"))
    html, csrf, page = await _page(client, _path(link))
    assert page.headers["Referrer-Policy"] == "no-referrer"  # S36
    assert email in html
    token = token_in(await smtp.inbox.arrival(email, subject="Reset"))
    used = await services_of(mail_app).database.fetchval(
        "SELECT used_at FROM email_tokens WHERE token_hash = $1",
        hash_link_token(token),
    )
    assert used is None  # S36: the GET spent nothing
    mismatch = await client.post(
        "/reset-password",
        form={
            "token": token,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": "something else",
            "csrf_token": csrf,
        },
    )
    assert mismatch.status_code == 422
    assert mismatch.headers["Referrer-Policy"] == "no-referrer"
    response = await client.post(
        "/reset-password",
        form={
            "token": token,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
            "csrf_token": csrf,
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?notice=password-reset"
    assert (await _form_login(client, email, NEW_PASSWORD)).status_code == 303
    assert (await _form_login(mail_app.test_client(), email)).status_code == 401


async def test_a_weak_password_on_the_reset_form_shows_the_form_again_without_referrer(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    # S36: the form shown again after a refused password still holds the token.
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    _, csrf, _ = await _page(client, "/forgot-password")
    await client.post("/forgot-password", form={"email": email, "csrf_token": csrf})
    token = token_in(await smtp.inbox.arrival(email, subject="Reset"))
    form = {"token": token, "new_password": "password", "new_password_confirm": "password"}
    weak = await client.post("/reset-password", form={**form, "csrf_token": csrf})
    assert weak.status_code == 422
    assert token in await weak.get_data(as_text=True)
    assert weak.headers["Referrer-Policy"] == "no-referrer"


async def test_a_dead_link_shows_a_page_that_says_what_to_do(client: Client) -> None:
    html, _, response = await _page(client, "/reset-password?token=" + "A" * 43, status=400)
    assert "This link does not work" in html
    assert 'href="/forgot-password"' in html
    assert response.headers["Referrer-Policy"] == "no-referrer"
    await _page(client, "/verify-email?token=not!a!token", status=400)
    await _page(client, "/undo-email-change", status=400)


async def test_verify_page_confirms_only_on_post_and_the_account_shows_it(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await _form_login(client, email)).status_code == 303
    account, _, _ = await _page(client, "/account")
    assert "is not confirmed yet" in account

    link = link_in(await smtp.inbox.arrival(email, subject="Confirm"))
    html, csrf, page = await _page(client, _path(link))
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "Confirm my email address" in html
    account, _, _ = await _page(client, "/account")
    assert "is not confirmed yet" in account  # the GET changed nothing

    token = token_in(await smtp.inbox.arrival(email, subject="Confirm"))
    response = await client.post("/verify-email", form={"token": token, "csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["Location"] == "/account?notice=email-verified"
    account, _, _ = await _page(client, "/account?notice=email-verified")
    assert "is confirmed" in account
    assert "Your email address is confirmed." in account


async def test_account_page_resends_the_confirmation_link(
    mail_app: Quart, smtp: SmtpServer
) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await _form_login(client, email)).status_code == 303
    _, csrf, _ = await _page(client, "/account")
    response = await client.post("/account/verify-email", form={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["Location"] == "/account?notice=verification-sent"
    await smtp.inbox.arrival(email, subject="Confirm", count=2)


async def test_login_page_offers_a_new_link_when_verification_is_required(
    settings: Settings, smtp: SmtpServer
) -> None:
    async with started_app(mail_settings(settings, smtp, email_verification="required")) as app:
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        response = await _form_login(client, email)
        assert response.status_code == 403
        html = await response.get_data(as_text=True)
        assert "Confirm your email address first" in html
        assert 'action="/verify-email/resend"' in html
        csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
        assert csrf is not None
        response = await client.post(
            "/verify-email/resend", form={"email": email, "csrf_token": csrf.group(1)}
        )
        assert response.status_code == 303
        assert response.headers["Location"] == "/login?notice=verification-sent"
        await smtp.inbox.arrival(email, subject="Confirm", count=2)


async def test_email_change_and_undo_with_the_forms(mail_app: Quart, smtp: SmtpServer) -> None:
    client = mail_app.test_client()
    old, new = unique_email(), unique_email()
    await register(client, old)
    assert (await _form_login(client, old)).status_code == 303
    _, csrf, _ = await _page(client, "/account")
    wrong = await client.post(
        "/account/email",
        form={"new_email": new, "email_password": "not my password", "csrf_token": csrf},
    )
    assert wrong.status_code == 401
    assert "The current password is incorrect." in await wrong.get_data(as_text=True)
    response = await client.post(
        "/account/email", form={"new_email": new, "email_password": PASSWORD, "csrf_token": csrf}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/account?notice=email-change-sent"

    link = link_in(await smtp.inbox.arrival(new, subject="new email address"))
    html, csrf, _ = await _page(client, _path(link))
    assert "Confirm your new email address" in html
    assert new in html
    response = await client.post(
        "/verify-email",
        form={
            "token": token_in(await smtp.inbox.arrival(new, subject="new email address")),
            "csrf_token": csrf,
        },
    )
    assert response.headers["Location"] == "/account?notice=email-changed"
    account, _, _ = await _page(client, "/account")
    assert f"You are logged in as <strong>{new}</strong>" in account

    undo = link_in(await smtp.inbox.arrival(old, subject="was changed"))
    html, csrf, page = await _page(client, _path(undo))
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert old in html
    response = await client.post(
        "/undo-email-change",
        form={
            "token": token_in(await smtp.inbox.arrival(old, subject="was changed")),
            "csrf_token": csrf,
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?notice=email-change-undone"
    assert (await client.get("/account")).status_code == 303  # logged out everywhere
    assert (await _form_login(mail_app.test_client(), old)).status_code == 303
