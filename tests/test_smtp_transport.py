"""The SMTP transport leaves no connection open, whatever ends a delivery (shutdown too)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from keystile.embedded import free_port
from keystile.mail.transports import SmtpTransport
from tests.mail_support import Inbox


class _NoGoodbyeServer:
    """aiosmtpd that takes mail as usual but never answers QUIT; it notes when the
    client has sent QUIT and when the client hung up."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.quit_received = threading.Event()
        self.hung_up = threading.Event()
        server = self

        class NoGoodbye(SMTP):
            quit_sent = False

            async def smtp_QUIT(self, arg: str) -> None:
                self.quit_sent = True
                server.quit_received.set()
                await asyncio.Event().wait()

            def connection_lost(self, error: Exception | None) -> None:
                super().connection_lost(error)
                if self.quit_sent:  # not the controller's own start-up probe
                    server.hung_up.set()

        class NoGoodbyeController(Controller):
            def factory(self) -> SMTP:
                return NoGoodbye(self.handler, **self.SMTP_kwargs)

        self._controller = NoGoodbyeController(self.inbox, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> _NoGoodbyeServer:
        self._controller.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._controller.stop()


@pytest.fixture(name="no_goodbye")
def _no_goodbye() -> Iterator[_NoGoodbyeServer]:
    with _NoGoodbyeServer() as server:
        yield server


def _message(recipient: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "keystile@example.test"
    message["To"] = recipient
    message["Subject"] = "A test"
    message.set_content("Hello.")
    return message


async def test_a_delivery_cancelled_while_waiting_for_quit_hangs_up(
    no_goodbye: _NoGoodbyeServer,
) -> None:
    # A worker shutting down cancels its sender at any await, the last QUIT included.
    transport = SmtpTransport(f"smtp://127.0.0.1:{no_goodbye.port}", starttls="off", timeout=30)

    async def deliver() -> None:
        async with transport.open() as delivery:
            await delivery.send(_message("ada@example.test"))

    task = asyncio.create_task(deliver())
    assert await asyncio.to_thread(no_goodbye.quit_received.wait, 10)
    assert no_goodbye.inbox.to("ada@example.test")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(no_goodbye.hung_up.wait, 5), "the connection was left open"
