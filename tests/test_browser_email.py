"""The email flows in a real browser (headless Debian Chromium via Playwright), with the
mail read from a real SMTP server: forgot -> mail -> reset -> log in; register -> verify.

The server's `public_url` stands for the https address of a proxy in front of it (so its
cookies are Secure); the browser follows each mailed link's path and query on the server
itself, at http://localhost, where Chromium keeps Secure cookies.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.mail_support import PUBLIC_URL, SmtpServer, link_in
from tests.support.backing import Backing
from tests.support.binaries import requires_binary
from tests.support.http import unique_email
from tests.support.processes import start_server, wait_until_ready
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a completely different passphrase"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    requires_binary("chromium", package="chromium"),
]


@pytest.fixture(name="mail_server", scope="module")
def _mail_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="base_url", scope="module")
def _base_url(
    backing: Backing, mail_server: SmtpServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    server = start_server(
        backing,
        tmp_path_factory.mktemp("serve-email"),
        workers=1,
        smtp_url=mail_server.url,
        smtp_starttls="off",
        public_url=PUBLIC_URL,
        cookie_secure="true",  # an https public_url needs Secure cookies (S8)
        outbox_poll_seconds="0.1",
    )
    try:
        wait_until_ready(server)
        # Chromium keeps Secure (and __Host-) cookies on plain http for localhost only.
        yield f"http://localhost:{server.port}"
    finally:
        server.stop()


@pytest.fixture(name="browser", scope="module")
def _browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _follow(page: Page, base: str, link: str) -> None:
    assert link.startswith(PUBLIC_URL)
    parts = urlsplit(link)
    page.goto(f"{base}{parts.path}?{parts.query}")


def _register(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/register")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat the password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("status")).to_contain_text("Log in to continue")


def _log_in(page: Page, base: str, email: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_forgot_password_mail_reset_and_log_in_with_the_new_password(
    browser: Browser, base_url: str, mail_server: SmtpServer
) -> None:
    email = unique_email()
    context = browser.new_context()
    try:
        page = context.new_page()
        _register(page, base_url, email)
        page.goto(f"{base_url}/login")
        page.get_by_role("link", name="Forgot your password?").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Forgot your password?")
        page.get_by_label("Email address").fill(email)
        page.get_by_role("button", name="Send me a reset link").click()
        expect(page.get_by_role("status")).to_contain_text("a link to reset its password")

        _follow(page, base_url, link_in(mail_server.inbox.wait_for(email, subject="Reset")))
        expect(page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Set the new password").click()
        expect(page.get_by_role("status")).to_contain_text("Your password is changed")

        _log_in(page, base_url, email, PASSWORD)
        expect(page.get_by_role("alert")).to_contain_text("The email or password is incorrect.")
        _log_in(page, base_url, email, NEW_PASSWORD)
        expect(page).to_have_url(f"{base_url}/account")
        mail_server.inbox.wait_for(email, subject="password was changed")
    finally:
        context.close()


def test_register_then_confirm_the_address_from_the_mail(
    browser: Browser, base_url: str, mail_server: SmtpServer
) -> None:
    email = unique_email()
    context = browser.new_context()
    try:
        page = context.new_page()
        _register(page, base_url, email)
        _log_in(page, base_url, email, PASSWORD)
        expect(page.locator("#email-state")).to_contain_text("is not confirmed yet")

        _follow(page, base_url, link_in(mail_server.inbox.wait_for(email, subject="Confirm")))
        expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your email address")
        page.get_by_role("button", name="Confirm my email address").click()
        expect(page).to_have_url(f"{base_url}/account?notice=email-verified")
        expect(page.get_by_role("status")).to_have_text("Your email address is confirmed.")
        expect(page.locator("#email-state")).to_contain_text("is confirmed")
    finally:
        context.close()
