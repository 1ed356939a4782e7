"""The pages in a real browser: headless Debian Chromium driven by Playwright.

The app runs as `keystile serve` in a subprocess on the test PostgreSQL and Redis.
Set KEYSTILE_UPDATE_SCREENSHOTS=1 to refresh docs/account.png from this run.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.support.backing import Backing
from tests.support.binaries import binary_path, requires_binary
from tests.support.http import PASSWORD, unique_email
from tests.support.processes import start_server, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = binary_path("chromium") or "chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    requires_binary("chromium", package="chromium"),
]


@pytest.fixture(name="base_url", scope="module")
def _base_url(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve the app over real HTTP, as `keystile serve` does in production."""
    server = start_server(backing, tmp_path_factory.mktemp("serve"), workers=1)
    try:
        wait_until_ready(server)
        yield server.base
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


def _log_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}/account")


def test_register_log_in_revoke_another_session_and_log_out(
    browser: Browser, base_url: str, tmp_path: Path
) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    laptop = browser.new_context(viewport={"width": 1000, "height": 900})
    phone = browser.new_context(user_agent=IPHONE)
    try:
        page = laptop.new_page()
        page.goto(f"{base_url}/register")
        expect(page.get_by_role("heading", level=1)).to_have_text("Create an account")
        page.get_by_label("Email address").fill(email)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("status")).to_contain_text("Log in to continue")

        _log_in(page, base_url, email)
        expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
        expect(page.locator("main")).to_contain_text(email)

        other = phone.new_page()
        _log_in(other, base_url, email)

        page.reload()
        rows = page.locator("table.sessions tbody tr")
        expect(rows).to_have_count(2)
        expect(page.locator("tr.current")).to_contain_text("this device")
        expect(page.locator("tbody tr:not(.current)")).to_contain_text("Mobile Safari 17 on iOS")
        page.screenshot(path=str(tmp_path / "account.png"), full_page=True)
        if os.environ.get("KEYSTILE_UPDATE_SCREENSHOTS") == "1":
            shutil.copy(tmp_path / "account.png", ROOT / "docs" / "account.png")

        page.locator("tbody tr:not(.current)").get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("status")).to_have_text("That session has ended.")
        expect(rows).to_have_count(1)

        other.goto(f"{base_url}/account")  # the revoked device is sent to log in again
        expect(other).to_have_url(f"{base_url}/login?next=/account")

        page.get_by_role("button", name="Log out", exact=True).click()
        expect(page.get_by_role("status")).to_have_text("You are logged out.")
        page.goto(f"{base_url}/account")
        expect(page).to_have_url(f"{base_url}/login?next=/account")
    finally:
        laptop.close()
        phone.close()


def test_wrong_password_message_is_announced_and_linked(browser: Browser, base_url: str) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{base_url}/login")
        page.get_by_label("Email address").fill(unique_email())
        page.get_by_label("Password").fill("certainly not the password")
        page.get_by_role("button", name="Log in").click()
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("The email or password is incorrect.")
        expect(page.locator("form[aria-describedby='form-error']")).to_have_count(1)
    finally:
        context.close()


def test_api_docs_render_every_operation_offline_under_the_csp(
    browser: Browser, base_url: str
) -> None:
    context = browser.new_context()
    outside: list[str] = []

    def _loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in {"127.0.0.1", "localhost"}:
            route.continue_()
        else:  # as on a host that cannot reach a CDN
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", _loopback_only)
    refused: list[str] = []
    try:
        page = context.new_page()
        page.on(
            "console",
            lambda message: (
                refused.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        page.goto(f"{base_url}/docs")
        login = page.locator(".opblock-post").filter(
            has=page.locator(".opblock-summary-path", has_text=re.compile(r"^/v1/sessions$"))
        )
        expect(login).to_be_visible()
        expect(page.locator(".opblock")).to_have_count(_operation_count(base_url))
        login.locator(".opblock-summary").click()  # expands: its request body is rendered
        expect(login.locator(".opblock-body")).to_contain_text("password")
    finally:
        context.close()
    assert outside == []
    assert refused == []


def _operation_count(base_url: str) -> int:
    document = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    return sum(len(operations) for operations in document["paths"].values())


NARROW = {"width": 360, "height": 740}


def _fits(page: Page) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} is {width[0]} px wide in a {width[1]} px viewport"


def test_every_page_fits_a_360_px_phone_without_sideways_scrolling(
    browser: Browser, base_url: str
) -> None:
    email = f"a-rather-long-address-{uuid.uuid4().hex}@subdomain.example.com"
    phone = browser.new_context(viewport=NARROW, user_agent=IPHONE)
    laptop = browser.new_context()
    try:
        page = phone.new_page()
        for path in ("/login", "/register", "/docs"):
            page.goto(f"{base_url}{path}")
            if path == "/docs":
                expect(page.locator(".opblock").first).to_be_visible()
            _fits(page)

        page.goto(f"{base_url}/register")
        page.get_by_label("Email address").fill(email)
        page.get_by_label("Password", exact=True).fill("short")
        page.get_by_label("Repeat the password").fill("different")
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("alert").or_(page.locator(".field-error").first)).to_be_visible()
        _fits(page)  # with the error messages shown

        page.get_by_label("Email address").fill(email)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("status")).to_contain_text("Log in to continue")
        _log_in(laptop.new_page(), base_url, email)  # a second session in the table
        _log_in(page, base_url, email)
        expect(page.locator("table.sessions tbody tr")).to_have_count(2)
        _fits(page)

        page.goto(f"{base_url}/reauth?next=/account")  # the step-up page (S42)
        expect(page.get_by_role("heading", level=1)).to_have_text("Confirm it is you")
        _fits(page)

        page.goto(f"{base_url}/no-such-page")  # the JSON 404, as a browser shows it
        _fits(page)

        # An error page: a form whose CSRF token no longer matches.
        page.goto(f"{base_url}/account")
        page.get_by_role("button", name="Log out", exact=True).click()
        expect(page.get_by_role("status")).to_have_text("You are logged out.")
        page.locator("input[name='csrf_token']").evaluate("field => { field.value = 'stale'; }")
        page.get_by_label("Email address").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert "expired" in page.content()
        _fits(page)
    finally:
        phone.close()
        laptop.close()


def test_the_reauth_page_confirms_the_password_and_goes_back(
    browser: Browser, base_url: str
) -> None:
    # S42: step-up in the browser refreshes the current session and returns to `next`.
    email = f"step-up-{uuid.uuid4().hex[:8]}@example.com"
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{base_url}/register")
        page.get_by_label("Email address").fill(email)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("status")).to_contain_text("Log in to continue")
        _log_in(page, base_url, email)
        session = next(c["value"] for c in context.cookies() if c["name"].endswith("_session"))

        page.goto(f"{base_url}/reauth?next=/account")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Continue", exact=True).click()
        expect(page.locator(".field-error")).to_be_visible()
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Continue", exact=True).click()
        expect(page).to_have_url(f"{base_url}/account")
        expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
        # The same session: its cookie was not replaced.
        after = [c["value"] for c in context.cookies() if c["name"].endswith("_session")]
        assert after == [session]
    finally:
        context.close()
