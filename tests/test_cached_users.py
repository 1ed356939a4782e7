"""The user-by-email cache wraps the repository: no write method can forget it."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from keystile.bootstrap import build_caches, build_users, open_database, open_redis
from keystile.repositories.cached_users import CREATES, CachedUserRepository
from keystile.repositories.users import PostgresUserRepository, User, UserRepository
from keystile.settings import Settings

Change = Callable[[UserRepository, User], Awaitable[User | None]]

# One call per write method that changes an existing user.
CHANGES: dict[str, Change] = {
    "update_password_hash": lambda users, user: users.update_password_hash(
        user.id, user.password_hash, "another-hash", changed=True
    ),
    "disable_user": lambda users, user: users.disable_user(user.id),
    "bump_token_epoch": lambda users, user: users.bump_token_epoch(user.id),
}


def _write_methods() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(UserRepository, inspect.isfunction)
        if not name.startswith(("_", "select_"))
    }


@pytest.fixture(name="users")
async def _users(settings: Settings) -> AsyncIterator[UserRepository]:
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(open_database(settings.database))
        redis = await stack.enter_async_context(open_redis(settings.redis))
        caches = await build_caches(redis, stack)
        yield build_users(settings, PostgresUserRepository(database), caches, secret=b"k" * 32)


def _email() -> str:
    return f"cached-{uuid.uuid4().hex}@example.com"


def test_every_write_method_of_the_protocol_is_a_create_or_a_tested_change() -> None:
    writes = _write_methods()
    assert writes == set(CHANGES) | CREATES, "a new write method needs a case in CHANGES"
    for name in writes:
        assert name in vars(CachedUserRepository), f"CachedUserRepository must wrap {name}"


@pytest.mark.parametrize("method", sorted(CHANGES))
async def test_a_change_is_seen_by_the_next_lookup(users: UserRepository, method: str) -> None:
    email = _email()
    user = await users.insert_user(email, "a-hash")
    assert user is not None
    assert await users.select_user_by_email(email) == user  # now cached
    changed = await CHANGES[method](users, user)
    assert changed is not None
    assert changed != user
    assert await users.select_user_by_email(email.upper()) == changed


async def test_a_lookup_that_missed_does_not_hide_a_user_created_after_it(
    users: UserRepository,
) -> None:
    one, many = _email(), [_email(), _email()]
    for email in (one, *many):
        assert await users.select_user_by_email(email) is None
    await users.insert_user(one, "a-hash")
    await users.insert_users([(email, "a-hash") for email in many])
    for email in (one, *many):
        found: Any = await users.select_user_by_email(email)
        assert found is not None
        assert found.email == email


async def test_a_user_found_by_cache_key_is_the_one_whose_email_it_is(settings: Settings) -> None:
    # A login's second step finds its user by the cache key its first step handed out,
    # and only that user (S42: an mfa_token stays bound to its user).
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(open_database(settings.database))
        redis = await stack.enter_async_context(open_redis(settings.redis))
        caches = await build_caches(redis, stack)
        users = build_users(settings, PostgresUserRepository(database), caches, secret=b"k" * 32)
        email, other = _email(), _email()
        user = await users.insert_user(email, "a-hash")
        someone = await users.insert_user(other, "a-hash")
        assert user is not None
        assert someone is not None
        key = users.cache_key(user)
        assert await users.select_user_by_cache_key(key, user.id) == user
        # Another user's id through this key: not that user.
        assert await users.select_user_by_cache_key(key, someone.id) is None
        # The email changed: the old key no longer finds the user, nor caches it.
        moved = _email()
        await database.execute("UPDATE users SET email = $2 WHERE id = $1", user.id, moved)
        await users.forget_cached(email)
        assert await users.select_user_by_cache_key(key, user.id) is None
        assert await users.select_user_by_email(email) is None
        found = await users.select_user_by_email(moved)
        assert found is not None
        assert found.id == user.id
