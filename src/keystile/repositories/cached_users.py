"""`CachedUserRepository`: the login lookup by email, cached (hot path 2).

A wrapper around any `UserRepository`, so the cache cannot be forgotten by a new
write method of the repository: every write goes through here. A write that changes
a user invalidates its entry (in this worker, in Redis and, by pub/sub, on every
other worker), so a password change or a disable is seen by the next login
everywhere. A write that creates users has nothing to invalidate: a lookup that
finds no user is never cached (`CREATES` names these; a test holds both to it).

Entries are keyed by `key_of(email)`: the composition root makes that a keyed hash
carrying the account's hash tag, so Redis key names hold no emails and the login gate
reads an account's entry in the same script (and cluster slot) as its counters.

After the secret key is rotated, a worker not yet restarted names entries under the
previous key (`previous_keys_of`): a write drops those too, so a password change on one
worker is seen by the next login on any other, whichever key it runs under.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from uuid import UUID

from keystile.repositories.users import AfterWrite, User, UserRepository
from keystile.stores.cache import SharedCopy, TieredCache

__all__ = ["CREATES", "CachedUserRepository"]

# Write methods that only add users: no entry can exist for them, since misses are not cached.
CREATES = frozenset({"insert_user", "insert_users"})


class CachedUserRepository:
    """A `UserRepository` whose `select_user_by_email` reads through `by_email`."""

    def __init__(
        self,
        users: UserRepository,
        by_email: TieredCache[User],
        key_of: Callable[[str], str],
        previous_keys_of: Callable[[str], Sequence[str]] = lambda _: (),
    ) -> None:
        """`key_of` returns the cache key of an email; it must ignore the email's case
        (`bootstrap.accounts.build_users`: a keyed hash, so no email reaches a Redis key name).
        `previous_keys_of` returns the keys the previous secret keys give it (invalidated
        too, and accepted by `select_user_by_cache_key`)."""
        self._users = users
        self._by_email = by_email
        self._key_of = key_of
        self._previous_keys_of = previous_keys_of

    def shared_key(self, email: str) -> str:
        """Return the Redis key of the cached user of `email` (for the login gate's read)."""
        return self._by_email.redis_key(self._key_of(email))

    async def forget_cached(self, *emails: str) -> None:
        """Drop the cached users of these addresses, here and on every worker.

        For writes made inside a caller's own transaction, after it committed.
        """
        for email in emails:
            for key in (self._key_of(email), *self._previous_keys_of(email)):
                await self._by_email.invalidate(key)

    async def _changed(self, user: User | None) -> User | None:
        if user is not None:
            await self.forget_cached(user.email)
        return user

    # --- reads ---

    async def select_user_by_email(
        self, email: str, *, shared: SharedCopy | None = None
    ) -> User | None:
        """Return the user with this email (any case), from the cache when it has it.

        `shared`: the entry's Redis copy as the login gate read it (`shared_key`).
        """
        return await self._by_email.get(
            self._key_of(email), lambda: self._users.select_user_by_email(email), shared=shared
        )

    async def select_user_by_id(self, user_id: UUID) -> User | None:
        return await self._users.select_user_by_id(user_id)

    def cache_key(self, user: User) -> str:
        """Return the cache key of `user`'s entry, to find it again by `select_user_by_cache_key`
        (a login's second step: no email needs to be kept to look the user up)."""
        return self._key_of(user.email)

    async def select_user_by_cache_key(self, key: str, user_id: UUID) -> User | None:
        """Return user `user_id` from the entry `key` (`cache_key`), read through as by email.

        None if the user is gone or `key` is no longer its email's (the email changed):
        the entry only ever holds the user whose email it is keyed by. A key made under a
        previous secret key (a login's first step before the rotation) is still its email's.
        """

        async def load() -> User | None:
            user = await self._users.select_user_by_id(user_id)
            if user is None:
                return None
            if key == self._key_of(user.email) or key in self._previous_keys_of(user.email):
                return user
            return None

        user = await self._by_email.get(key, load)
        return user if user is not None and user.id == user_id else None

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
