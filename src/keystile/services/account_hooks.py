"""What other capabilities may add to registration, password change and login.

`AuthService` calls these at fixed points; the mail capability implements them
(verification mail on registration, a notice on password change, the
`email_verification = "required"` check and new-device notices on login). The
two `*_in_transaction` hooks run inside the transaction of the user write, so
what they write (the outbox row) commits or rolls back with it.
"""

from __future__ import annotations

from typing import Protocol

import asyncpg

from keystile.repositories.users import User
from keystile.services.types import ClientInfo

__all__ = ["AccountHooks"]


class AccountHooks(Protocol):
    async def registered_in_transaction(self, connection: asyncpg.Connection, user: User) -> None:
        """A user was just inserted (not yet committed)."""
        ...

    async def password_changed_in_transaction(
        self, connection: asyncpg.Connection, user: User
    ) -> None:
        """The user's password was just changed by the user (not yet committed)."""
        ...

    async def authenticated(
        self, user: User, client: ClientInfo, *, known_client: bool = False
    ) -> None:
        """The credentials are right; raise a `KeystileError` to refuse the login anyway.

        `known_client`: this address has logged in to the account before (the login
        gate's known-client mark).
        """
        ...
