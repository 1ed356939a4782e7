"""Mail templates (Jinja): a subject, a plain-text body and an HTML body per kind of message.

For a kind such as `password_reset` the files are `password_reset.subject.txt`,
`password_reset.txt` and `password_reset.html`. A file of the same name in
`mail_template_dir` replaces the built-in one (`keystile/mail/templates/`), so an
operator can restyle one message or all of them. Every template sees `site_name`,
`public_url` and `recipient`, plus the values of its message (`link`, ...).
HTML is autoescaped; the subject is folded onto one line.
"""

from __future__ import annotations

import email.policy
import email.utils
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)

__all__ = ["MailRenderer", "message_id"]


def message_id(mail_id: int, created: float, domain: str) -> str:
    """Return a Message-ID stable across retries of one outbox row (receivers can dedupe)."""
    return f"<keystile.{mail_id}.{int(created)}@{domain}>"


class MailRenderer:
    """Turn a kind of message and its values into a MIME message (text + HTML)."""

    def __init__(
        self,
        *,
        sender: str,
        site_name: str,
        public_url: str,
        template_dir: Path | None = None,
    ) -> None:
        loaders: list[BaseLoader] = []
        if template_dir is not None:
            loaders.append(FileSystemLoader(template_dir))
        loaders.append(PackageLoader("keystile.mail", "templates"))
        self._env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self._sender = sender
        self._domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "localhost"
        self._globals = {"site_name": site_name, "public_url": public_url}

    @property
    def domain(self) -> str:
        return self._domain

    def render(
        self,
        kind: str,
        recipient: str,
        context: Mapping[str, Any],
        *,
        mail_id: int = 0,
        created: float = 0.0,
    ) -> EmailMessage:
        """Return the message; ValueError if a header would hold a line break (injection)."""
        values = {**self._globals, **context, "recipient": recipient}
        subject = self._env.get_template(f"{kind}.subject.txt").render(values)
        text = self._env.get_template(f"{kind}.txt").render(values)
        html = self._env.get_template(f"{kind}.html").render(values)
        message = EmailMessage(policy=email.policy.SMTP)
        # The policy refuses CR or LF in any header value, so nothing a user typed can
        # add a header; a template's own line breaks in the subject are folded away.
        message["Subject"] = " ".join(subject.split())
        message["From"] = self._sender
        message["To"] = recipient
        message["Date"] = email.utils.formatdate(usegmt=True)
        message["Message-ID"] = message_id(mail_id, created, self._domain)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message
