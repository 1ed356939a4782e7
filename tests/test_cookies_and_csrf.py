"""Cookie flags (S8) and CSRF protection of cookie-authenticated changes (S11)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keystile.settings import Settings
from tests.conftest import MakeApp
from tests.support.backing import Backing, make_settings
from tests.support.http import Client, login, register, unique_email


async def test_secure_cookie_has_host_prefix_and_every_flag(make_app: MakeApp) -> None:
    # S8: Secure, HttpOnly, SameSite=Lax and the __Host- prefix (so no Domain, Path=/).
    client = (await make_app(cookie_secure=True)).test_client()
    email = unique_email()
    await register(client, email)
    response = await client.post(
        "/v1/sessions",
        json={"email": email, "password": "correct horse battery staple"},
        scheme="https",
    )
    assert response.status_code == 201
    _assert_host_cookie(response.headers["Set-Cookie"], "__Host-keystile_session")


def _assert_host_cookie(cookie: str, name: str) -> None:
    """`cookie` (a Set-Cookie value) is `name`, Secure, HttpOnly, SameSite=Lax, Path=/,
    without Domain: what the `__Host-` prefix and S8 ask for."""
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert cookie.startswith(f"{name}=")
    assert {"secure", "httponly", "samesite", "path"} <= attributes
    assert "domain" not in attributes
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie


async def test_secure_csrf_nonce_cookie_has_host_prefix_and_every_flag(make_app: MakeApp) -> None:
    # S8: the forms' nonce cookie too: Secure, HttpOnly, SameSite=Lax, `__Host-` (no Domain).
    client = (await make_app(cookie_secure=True)).test_client()
    response = await client.get("/login", scheme="https")
    assert response.status_code == 200
    _assert_host_cookie(response.headers["Set-Cookie"], "__Host-keystile_csrf")


def test_samesite_none_is_not_a_cookie_setting(backing: Backing) -> None:
    # S8: SameSite=Lax or Strict only; None would send the cookie on cross-site requests.
    assert make_settings(backing, cookie_samesite="Strict").sessions.cookie_samesite == "Strict"
    with pytest.raises(ValidationError, match="cookie_samesite"):
        make_settings(backing, cookie_samesite="None")


async def _logged_in(client: Client) -> None:
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201


async def test_cross_site_logout_is_refused(client: Client) -> None:
    # S11: a state change authenticated by cookie from another site gets 403.
    await _logged_in(client)
    response = await client.delete("/v1/sessions/current", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    assert (await response.get_json())["error"]["code"] == "csrf_failed"
    assert (await client.get("/v1/me")).status_code == 200


async def test_same_site_but_cross_origin_logout_is_refused(client: Client) -> None:
    # S11: a sibling subdomain is same-site, so SameSite lets the cookie through; the
    # Sec-Fetch-Site check must not (that would be SameSite alone).
    await _logged_in(client)
    response = await client.delete("/v1/sessions/current", headers={"Sec-Fetch-Site": "same-site"})
    assert response.status_code == 403
    assert (await response.get_json())["error"]["code"] == "csrf_failed"
    assert (await client.get("/v1/me")).status_code == 200


async def test_foreign_origin_logout_is_refused(client: Client) -> None:
    await _logged_in(client)
    response = await client.delete(
        "/v1/sessions/current", headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert (await client.get("/v1/me")).status_code == 200


async def test_same_origin_logout_is_allowed(client: Client) -> None:
    await _logged_in(client)
    response = await client.delete(
        "/v1/sessions/current", headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert response.status_code == 204


async def test_cross_site_login_is_refused(client: Client, settings: Settings) -> None:
    # Login CSRF: another site must not log a browser into the attacker's account.
    email = unique_email()
    await register(client, email)
    response = await client.post(
        "/v1/sessions",
        json={"email": email, "password": "correct horse battery staple"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/sessions/mfa", {"mfa_token": "t" * 32, "code": "123456"}),
        ("/v1/passkeys/login", {"credential": {}, "mode": "session"}),
    ],
)
async def test_cross_site_second_step_and_passkey_logins_are_refused(
    client: Client, path: str, body: dict[str, object]
) -> None:
    # S11, login CSRF: every way to a session cookie checks where the request came from,
    # before it looks at the credentials.
    response = await client.post(path, json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    assert (await response.get_json())["error"]["code"] == "csrf_failed"
    assert "Set-Cookie" not in response.headers


async def test_cross_site_verification_mail_request_by_cookie_is_refused(client: Client) -> None:
    # S11: a cookie-authenticated POST that sends mail is a state change too.
    await _logged_in(client)
    response = await client.post(
        "/v1/email-verifications", headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 403
    assert (await response.get_json())["error"]["code"] == "csrf_failed"
