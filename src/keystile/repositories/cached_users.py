"""`CachedUserRepository`: the login lookup by email, cached (hot path 2).

A wrapper around any `UserRepository`, so the cache cannot be forgotten by a new
write method of the repository: every write goes through here. A write that changes
a user invalidates its entry (in this worker, in Redis and, by pub/sub, on every
other worker), so a password change or a disable is seen by the next login
everywhere. A write that creates users has nothing to invalidate: a lookup that
finds no user is never cached (`CREATES` names these; a test holds both to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from keystile.repositories.users import AfterWrite, User, UserRepository
from keystile.stores.cache import TieredCache

__all__ = ["CREATES", "CachedUserRepository"]

# Write methods that only add users: no entry can exist for them, since misses are not cached.
CREATES = frozenset({"insert_user", "insert_users"})


def _email_key(email: str) -> str:
    return email.lower()


class CachedUserRepository:
    """A `UserRepository` whose `select_user_by_email` reads through `by_email`."""

    def __init__(self, users: UserRepository, by_email: TieredCache[User]) -> None:
        self._users = users
        self._by_email = by_email

    async def forget_cached(self, *emails: str) -> None:
        """Drop the cached users of these addresses, here and on every worker.

        For writes made inside a caller's own transaction, after it committed.
        """
        for email in emails:
            await self._by_email.invalidate(_email_key(email))

    @property
    def by_email(self) -> TieredCache[User]:
        """The cache, for writers outside this repository that change users (admin roles)."""
        return self._by_email

    async def _changed(self, user: User | None) -> User | None:
        if user is not None:
            await self._by_email.invalidate(_email_key(user.email))
        return user

    # --- reads ---

    async def select_user_by_email(self, email: str) -> User | None:
        """Return the user with this email (any case), from the cache when it has it."""
        return await self._by_email.get(
            _email_key(email), lambda: self._users.select_user_by_email(email)
        )

    async def select_user_by_id(self, user_id: UUID) -> User | None:
        return await self._users.select_user_by_id(user_id)

    async def select_users(self, limit: int, after_email: str = "") -> list[User]:
        return await self._users.select_users(limit, after_email)

    # --- writes that create (see CREATES) ---

    async def insert_user(
        self, email: str, password_hash: str, *, then: AfterWrite | None = None
    ) -> User | None:
        return await self._users.insert_user(email, password_hash, then=then)

    async def insert_users(self, rows: Sequence[tuple[str, str]]) -> list[str]:
        return await self._users.insert_users(rows)

    # --- writes that change: each one invalidates what it changed ---

    async def update_password_hash(
        self,
        user_id: UUID,
        old_hash: str,
        new_hash: str,
        *,
        changed: bool,
        then: AfterWrite | None = None,
    ) -> User | None:
        return await self._changed(
            await self._users.update_password_hash(
                user_id, old_hash, new_hash, changed=changed, then=then
            )
        )

    async def disable_user(self, user_id: UUID) -> User | None:
        return await self._changed(await self._users.disable_user(user_id))

    async def bump_token_epoch(self, user_id: UUID) -> User | None:
        return await self._changed(await self._users.bump_token_epoch(user_id))
