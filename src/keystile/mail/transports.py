"""Where messages go: an SMTP server (aiosmtplib), or a Maildir for development.

A transport opens a `Delivery` (one SMTP connection) for a batch of messages.
Failures are sorted for the sender:

- `TransportUnavailable`: the server could not be reached or refused the session
  (connect, TLS, login). Nothing was sent; the messages wait for the server.
- `TransientFailure`: this message failed in a way that may pass (4xx, a dropped
  connection mid-message). It is retried later.
- `PermanentFailure`: this message will never go (5xx for it). It is dead at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mailbox
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

__all__ = [
    "Delivery",
    "MailTransport",
    "MaildirTransport",
    "PermanentFailure",
    "SmtpTransport",
    "TransientFailure",
    "TransportUnavailable",
    "read_maildir",
]

_log = logging.getLogger(__name__)


class TransportUnavailable(Exception):
    """The mail server could not be reached or would not open a session."""


class TransientFailure(Exception):
    """This message failed for now; try it again later."""


class PermanentFailure(Exception):
    """This message will never be accepted."""


class Delivery(Protocol):
    async def send(self, message: EmailMessage, *, link: str | None = None) -> None:
        """Hand over one message; raise one of the failures above."""
        ...


class MailTransport(Protocol):
    def open(self) -> AbstractAsyncContextManager[Delivery]:
        """Return a session for a batch; entering it may raise `TransportUnavailable`."""
        ...

    @property
    def name(self) -> str: ...


class _SmtpDelivery:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self._client = client

    async def send(self, message: EmailMessage, *, link: str | None = None) -> None:
        try:
            await self._client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refusal.code for refusal in exc.recipients]
            failure = PermanentFailure if all(c >= 500 for c in codes) else TransientFailure
            raise failure(f"recipient refused ({', '.join(map(str, codes))})") from None
        except aiosmtplib.SMTPResponseException as exc:
            failure = PermanentFailure if exc.code >= 500 else TransientFailure
            raise failure(f"SMTP {exc.code}: {exc.message[:200]}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Dropped or timed out mid-message: it may or may not have been taken.
            raise TransientFailure(f"{type(exc).__name__}: {str(exc)[:200]}") from None


class SmtpTransport:
    """Send over SMTP: smtps:// is TLS from the start, smtp:// upgrades with STARTTLS.

    `starttls` (smtp:// only): "required" refuses a server without it, "opportunistic"
    uses it when offered, "off" never does (a relay on localhost, tests). Credentials
    come from the URL (`smtp://user:password@host`) or `username`/`password`.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: Literal["required", "opportunistic", "off"] = "required",
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        self._implicit_tls = parts.scheme == "smtps"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (465 if self._implicit_tls else 587)
        self._username = unquote(parts.username) if parts.username else username
        self._password = unquote(parts.password) if parts.password else password
        self._starttls = starttls
        self._timeout = timeout
        self._tls_context = tls_context

    @property
    def name(self) -> str:
        return f"smtp {self._host}:{self._port}"

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Delivery]:
        if self._implicit_tls or self._starttls == "off":
            start_tls: bool | None = False
        else:
            start_tls = True if self._starttls == "required" else None
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._implicit_tls,
            start_tls=start_tls,
            timeout=self._timeout,
            tls_context=self._tls_context,
        )
        try:
            try:
                await client.connect()
                if self._username is not None:
                    await client.login(self._username, self._password or "")
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise TransportUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from None
            yield _SmtpDelivery(client)
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit()  # closes the connection when the server says goodbye
        finally:
            # Refused, failed mid-command, or cancelled (shutdown) at any point, QUIT
            # included: the conversation is in an unknown state, and a polite QUIT could
            # wait a whole timeout for an answer. Hang up; nothing is left open.
            client.close()


class _MaildirDelivery:
    def __init__(self, box: mailbox.Maildir, directory: Path) -> None:
        self._box = box
        self._directory = directory

    async def send(self, message: EmailMessage, *, link: str | None = None) -> None:
        key = await asyncio.to_thread(self._box.add, message)
        # Development only (no smtp_url): the link in the log makes the flows usable
        # without a mail client. With SMTP configured no link is ever logged (S18).
        _log.info(
            "mail to %s in the development Maildir: %s %s",
            message["To"],
            message["Subject"],
            link or "",
            extra={
                "mail_id": key,
                "to": message["To"],
                "subject": message["Subject"],
                "link": link,
                "maildir": str(self._directory),
            },
        )


class MaildirTransport:
    """Deliver into a Maildir (`keystile mail list` / `show` read it) and log each link."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    @property
    def name(self) -> str:
        return f"maildir {self._directory}"

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Delivery]:
        try:
            box = await asyncio.to_thread(read_maildir, self._directory)
        except OSError as exc:
            raise TransportUnavailable(f"{self.name}: {exc}") from None
        yield _MaildirDelivery(box, self._directory)


def read_maildir(directory: Path) -> mailbox.Maildir:
    """Open the development Maildir (creating it, private to its owner, if it is not there).

    Each directory is made if missing, rather than by `mailbox.Maildir(create=True)`,
    which makes the three subdirectories only if the Maildir itself is new: a reader
    that came in while a worker was creating it (`keystile mail list`) found `cur`
    missing and failed.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    for path in (directory, directory / "tmp", directory / "new", directory / "cur"):
        path.mkdir(mode=0o700, exist_ok=True)
    return mailbox.Maildir(directory, create=False)
