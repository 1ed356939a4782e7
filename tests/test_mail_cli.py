"""The development default: without `smtp_url` mail goes to a Maildir under data_dir, each
link is logged, and `keystile mail list` / `keystile mail show ID` read it. With SMTP
configured, no link ever reaches the log (S18)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from quart import Quart

from keystile.mail.transports import read_maildir
from keystile.settings import Settings
from tests.mail_support import PUBLIC_URL, SmtpServer, mail_settings, started_app
from tests.support.http import register, unique_email

ROOT = Path(__file__).resolve().parents[1]


def _keystile(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update(KEYSTILE_SETTINGS_FILE=str(ROOT / "settings.toml"), KEYSTILE_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "keystile", "mail", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_maildir_caught_half_created_is_read_as_empty(tmp_path: Path) -> None:
    # A reader (`keystile mail list`, or a test polling) can open the Maildir while a
    # worker is still making its subdirectories: it completes them and reads none.
    directory = tmp_path / "mail"
    directory.mkdir(mode=0o700)
    (directory / "tmp").mkdir(mode=0o700)

    box = read_maildir(directory)

    assert len(box) == 0
    assert sorted(p.name for p in directory.iterdir()) == ["cur", "new", "tmp"]
    assert all((directory / name).stat().st_mode & 0o777 == 0o700 for name in ("cur", "new"))


async def test_without_smtp_mail_lands_in_the_maildir_and_the_cli_reads_it(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "var"
    email = unique_email()
    caplog.set_level(logging.INFO, logger="keystile.mail.transports")
    async with started_app(mail_settings(settings, None, data_dir=data_dir)) as app:
        await register(app.test_client(), email)
        deadline = time.monotonic() + 30
        while not len(read_maildir(data_dir / "mail")):
            assert time.monotonic() < deadline, "nothing reached the Maildir"
            await _sleep()
    logged = [r for r in caplog.records if getattr(r, "to", None) == email]
    assert len(logged) == 1
    link = logged[0].link  # type: ignore[attr-defined]
    assert link.startswith(f"{PUBLIC_URL}/verify-email?token=")
    assert link in logged[0].getMessage()  # shown by the text log of `make run` too

    listed = _keystile(data_dir, "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = [row for row in listed.stdout.splitlines() if email in row]
    mail_id, _, to, subject = line.split("\t")
    assert (to, subject) == (email, "Confirm your email address for keystile")

    shown = _keystile(data_dir, "show", mail_id[:12])
    assert shown.returncode == 0, shown.stderr
    assert f"To: {email}" in shown.stdout
    assert link in shown.stdout
    raw = _keystile(data_dir, "show", mail_id, "--raw")
    assert "Content-Type: multipart/alternative" in raw.stdout

    missing = _keystile(data_dir, "show", "no-such-message")
    assert missing.returncode == 2
    assert "no message" in missing.stderr


async def test_no_link_is_logged_when_smtp_is_configured(
    mail_app: Quart, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    # S18: tokens and links never reach the log outside the development Maildir.
    caplog.set_level(logging.DEBUG)
    email = unique_email()
    client = mail_app.test_client()
    await register(client, email)
    await client.post("/v1/password-resets", json={"email": email})
    await smtp.inbox.arrival(email, subject="Reset")
    for record in caplog.records:
        if record.name.startswith("mail.log"):
            continue  # the test's own SMTP server (aiosmtpd) logs what it receives
        text = record.getMessage() + " " + " ".join(str(v) for v in vars(record).values())
        assert "token=" not in text, record


async def _sleep() -> None:
    await asyncio.sleep(0.05)
