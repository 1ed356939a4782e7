"""Email flows over the API with a real SMTP server: reset, verification, change (S34-S37)."""

from __future__ import annotations

from quart import Quart

from tests.conftest import PASSWORD, login, register, unique_email
from tests.mail_support import SmtpServer, token_in

NEW_PASSWORD = "a brand new passphrase for this account"


async def test_password_reset_by_mail_sets_the_new_password(mail_app: Quart, smtp: SmtpServer) -> None:
    client = mail_app.test_client()
    email = unique_email()
    await register(client, email)
    response = await client.post("/v1/password-resets", json={"email": email})
    assert response.status_code == 202
    message = await smtp.inbox.arrival(email, subject="Reset")
    token = token_in(message)
    response = await client.post(
        "/v1/password-resets/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204, await response.get_data(as_text=True)
    assert (await login(client, email, NEW_PASSWORD)).status_code == 201
    assert (await login(client, email, PASSWORD)).status_code == 401
