"""A real SMTP server for the email tests (aiosmtpd on a free port) and helpers to read mail.

The `smtp` fixture starts one per test; `Inbox` holds what it received, and can
refuse recipients with a chosen SMTP reply to make deliveries fail. `stop()` and
`start()` take the server away and bring it back on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from quart import Quart

from keystile.app import create_app
from keystile.container import Overrides
from keystile.embedded import free_port
from keystile.settings import Settings
from tests.support.http import HttpsClient

__all__ = [
    "Inbox",
    "SmtpServer",
    "StallingServer",
    "link_in",
    "mail_settings",
    "started_app",
    "text_of",
    "token_in",
]

PUBLIC_URL = "https://auth.example.test"
_LINK = re.compile(r"https?://[^\s<>\"]+")


class Inbox:
    """What the server received, and which recipients it refuses (with which reply)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: dict[str, str] = {}
        self._changed = threading.Condition()

    # aiosmtpd handler hooks (run on the server's thread and loop)
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        reply = self.refuse.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=default_policy).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self._changed:
            return [m for m in self.messages if str(m["To"]).lower() == address.lower()]

    def wait_for(
        self, address: str, *, count: int = 1, subject: str = "", within: float = 30.0
    ) -> EmailMessage:
        """Block until `count` messages to `address` (with `subject` in it) have arrived."""
        deadline = time.monotonic() + within
        with self._changed:
            while True:
                found = [m for m in self._matching(address, subject)]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                assert left > 0, f"no mail {subject!r} to {address} within {within} s"
                self._changed.wait(timeout=min(left, 0.2))

    async def arrival(
        self, address: str, *, count: int = 1, subject: str = "", within: float = 30.0
    ) -> EmailMessage:
        """Wait (without blocking the loop) for the `count`th message to `address`."""
        deadline = time.monotonic() + within
        while True:
            with self._changed:
                found = list(self._matching(address, subject))
            if len(found) >= count:
                return found[count - 1]
            assert time.monotonic() < deadline, f"no mail {subject!r} to {address} in {within} s"
            await asyncio.sleep(0.02)

    def _matching(self, address: str, subject: str) -> Iterator[EmailMessage]:
        for message in self.messages:
            if str(message["To"]).lower() == address.lower() and subject in str(message["Subject"]):
                yield message


class SmtpServer:
    """aiosmtpd on 127.0.0.1:<free port>, in its own thread."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


class StallingServer:
    """Accepts TCP connections and never says a word: a sender talking to it hangs."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self._socket.accept()
                self._accepted.append(connection)

    def close(self) -> None:
        self._socket.close()
        for connection in self._accepted:
            connection.close()


@pytest.fixture(name="smtp")
def _smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def mail_settings(settings: Settings, smtp: SmtpServer | None, **overrides: Any) -> Settings:
    """Return `settings` with a running sender that delivers to `smtp` (fast polling)."""
    values: dict[str, Any] = {
        "outbox_sender_enabled": True,
        "outbox_poll_seconds": 0.05,
        "outbox_retry_base_seconds": 0.05,
        "outbox_retry_max_seconds": 0.5,
        # The https address of a TLS proxy in front, so the cookies are Secure (S8).
        "public_url": PUBLIC_URL,
        "cookie_secure": True,
        "smtp_starttls": "off",
    }
    if smtp is not None:
        values["smtp_url"] = SecretStr(smtp.url)
    values.update(overrides)
    # Validated again, so flat names land in their groups (`settings.email.smtp_url`).
    return Settings(**{**settings.model_dump(), **values})


@contextlib.asynccontextmanager
async def started_app(settings: Settings) -> AsyncIterator[Quart]:
    """Serve an app on `settings` (from `mail_settings`) for the block."""
    app = create_app(settings, overrides=Overrides())
    if settings.sessions.cookie_secure:
        app.test_client_class = HttpsClient  # Secure cookies need https requests
    async with app.test_app() as test_app:
        yield test_app  # type: ignore[misc]


@pytest.fixture(name="mail_app")
async def _mail_app(settings: Settings, smtp: SmtpServer) -> AsyncIterator[Quart]:
    async with started_app(mail_settings(settings, smtp)) as app:
        yield app


def text_of(message: EmailMessage) -> str:
    """Return the plain-text body of a message."""
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def link_in(message: EmailMessage) -> str:
    """Return the first link of the plain-text body that carries a token."""
    for link in _LINK.findall(text_of(message)):
        if "token=" in link:
            return str(link)
    raise AssertionError(f"no link with a token in {text_of(message)!r}")


def token_in(message: EmailMessage) -> str:
    """Return the token of the message's link."""
    return parse_qs(urlsplit(link_in(message)).query)["token"][0]
