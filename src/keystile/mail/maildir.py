"""Read the development Maildir: what `keystile mail list` and `keystile mail show` print."""

from __future__ import annotations

import email.policy
import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from keystile.errors import NotFound
from keystile.mail.transports import read_maildir

__all__ = ["MaildirEntry", "list_messages", "show_message"]


@dataclass(frozen=True, slots=True)
class MaildirEntry:
    key: str
    date: str
    to: str
    subject: str
    sort_key: float


def _load(directory: Path, key: str) -> EmailMessage:
    raw = read_maildir(directory).get_bytes(key)
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def list_messages(directory: Path) -> list[MaildirEntry]:
    """Return every message in the Maildir, oldest first."""
    entries = []
    for key in read_maildir(directory).iterkeys():
        message = _load(directory, key)
        sent = email.utils.parsedate_to_datetime(message["Date"]) if message["Date"] else None
        when = sent or datetime.fromtimestamp(0, UTC)
        entries.append(
            MaildirEntry(
                key=key,
                date=when.strftime("%Y-%m-%d %H:%M:%S"),
                to=str(message["To"] or ""),
                subject=str(message["Subject"] or ""),
                sort_key=when.timestamp(),
            )
        )
    return sorted(entries, key=lambda entry: (entry.sort_key, entry.key))


def show_message(directory: Path, key: str, *, raw: bool = False) -> str:
    """Return one message (by id or unique id prefix): headers and the plain-text body."""
    matches = [
        candidate for candidate in read_maildir(directory).iterkeys() if candidate.startswith(key)
    ]
    if len(matches) != 1:
        raise NotFound(
            f"no message {key!r} in {directory}" if not matches else f"{key!r} is ambiguous"
        )
    message = _load(directory, matches[0])
    if raw:
        return message.as_string()
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    headers = "".join(f"{name}: {message[name]}\n" for name in ("Date", "From", "To", "Subject"))
    return f"{headers}\n{text}"
