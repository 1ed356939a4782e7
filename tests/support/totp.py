"""A TOTP clock the tests move, and a user enrolled with an authenticator app."""

from __future__ import annotations

import time
from typing import Any

import pyotp
from quart import Quart

from tests.support.http import Client, login, register, unique_email
from tests.support.tokens import error_code, grant

__all__ = ["Clock", "code_at", "enrolled_user", "mfa_token"]


class Clock:
    """A TOTP clock the test moves by whole 30-second steps (`Overrides(mfa_clock=...)`)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()) // 30 * 30 + 15)  # mid-step

    def __call__(self) -> float:
        return self.now

    def step(self, steps: int = 1) -> None:
        self.now += 30 * steps


def code_at(secret: str, clock: Clock, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock.now + 30 * steps)


async def enrolled_user(app: Quart, clock: Clock) -> tuple[Client, str, str, list[str]]:
    """Return a logged-in client of a fresh user with TOTP, the email, secret and codes."""
    client = app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    started = await client.post("/v1/me/mfa/totp")
    assert started.status_code == 201, await started.get_data(as_text=True)
    setup = await started.get_json()
    assert setup["otpauth_uri"].startswith("otpauth://totp/")
    assert setup["qr_svg"].startswith("<svg")
    confirmed = await client.post(
        "/v1/me/mfa/totp/confirm", json={"code": code_at(setup["secret"], clock)}
    )
    assert confirmed.status_code == 200, await confirmed.get_data(as_text=True)
    codes = (await confirmed.get_json())["recovery_codes"]
    clock.step()  # the confirming code's step is used up
    return client, email, setup["secret"], codes


async def mfa_token(client: Client, email: str, *, tokens: bool = False) -> dict[str, Any]:
    """Log `email` in with its password; return the `mfa_required` answer."""
    response = await (grant(client, email) if tokens else login(client, email))
    assert await error_code(response, 401) == "mfa_required"
    return dict(await response.get_json())
