"""Passkeys in a real browser: Chromium with a CDP virtual authenticator (S41, S42).

Browsers refuse IP addresses as WebAuthn rp ids, so the server's public_url (rp id and
origin) is http://localhost:<port> and Chromium is pointed there.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, expect, sync_playwright

from keystile.embedded import free_port
from tests.support.backing import Backing
from tests.support.binaries import binary_path, requires_binary
from tests.support.http import PASSWORD
from tests.support.processes import start_server, wait_until_ready

CHROMIUM = binary_path("chromium") or "chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    requires_binary("chromium", package="chromium"),
]


@pytest.fixture(name="base_url", scope="module")
def _base_url(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    base = f"http://localhost:{port}"
    server = start_server(
        backing, tmp_path_factory.mktemp("serve"), workers=1, port=port, public_url=base
    )
    try:
        wait_until_ready(server)
        yield base
    finally:
        server.stop()


@pytest.fixture(name="browser", scope="module")
def _browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _authenticator(context: BrowserContext, page: Page) -> tuple[CDPSession, str]:
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, str(added["authenticatorId"])


def _password_login(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_register_a_passkey_log_in_with_it_and_use_it_as_second_factor(
    browser: Browser, base_url: str, tmp_path: Path
) -> None:
    email = f"pk-{uuid.uuid4().hex[:8]}@example.com"
    assert (
        httpx.post(f"{base_url}/v1/users", json={"email": email, "password": PASSWORD}).status_code
        == 202
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        cdp, authenticator_id = _authenticator(context, page)
        _password_login(page, base_url, email)
        expect(page).to_have_url(f"{base_url}/account")

        # Register: the first factor also brings ten recovery codes, shown once.
        page.get_by_label("Name of the new passkey (optional)").fill("Test key")
        page.get_by_role("button", name="Add a passkey").click()
        expect(page.locator("#passkey-status")).to_contain_text("Your passkey is added")
        expect(page.locator("#passkey-recovery-codes li")).to_have_count(10)
        page.reload()
        expect(page.get_by_text("Test key", exact=True)).to_be_visible()

        # Log out, then log in with the passkey alone.
        page.get_by_role("button", name="Log out", exact=True).click()
        page.goto(f"{base_url}/login")
        page.get_by_role("button", name="Sign in with a passkey").click()
        expect(page).to_have_url(f"{base_url}/account")

        # The password alone is no longer enough: the passkey is the second step.
        page.get_by_role("button", name="Log out", exact=True).click()
        _password_login(page, base_url, email)
        expect(page.get_by_role("heading", level=1)).to_have_text("Two-factor authentication")
        page.get_by_role("button", name="Use a passkey").click()
        expect(page).to_have_url(f"{base_url}/account")

        # A credential of another rp id is never accepted here.
        page.get_by_role("button", name="Log out", exact=True).click()
        cdp.send("WebAuthn.clearCredentials", {"authenticatorId": authenticator_id})
        key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cdp.send(
            "WebAuthn.addCredential",
            {
                "authenticatorId": authenticator_id,
                "credential": {
                    "credentialId": base64.b64encode(b"other-rp-credential").decode(),
                    "isResidentCredential": True,
                    "rpId": "other.example",
                    "privateKey": base64.b64encode(key).decode(),
                    "userHandle": base64.b64encode(b"someone").decode(),
                    "signCount": 0,
                },
            },
        )
        page.goto(f"{base_url}/login")
        page.get_by_role("button", name="Sign in with a passkey").click()
        expect(page.locator("#passkey-status")).to_contain_text("cancelled or timed out")
        expect(page).to_have_url(f"{base_url}/login")
        assert (
            httpx.get(
                f"{base_url}/v1/me",
                cookies=dict((c["name"], c["value"]) for c in context.cookies()),
            ).status_code
            == 401
        )
    finally:
        context.close()
