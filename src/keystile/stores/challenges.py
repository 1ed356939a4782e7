"""One-time challenges (mfa tokens, WebAuthn challenges): Redis, PostgreSQL when it is away.

A challenge is put with a lifetime and taken at most once: Redis GETDEL, or
`DELETE ... RETURNING` in PostgreSQL, so of two concurrent takers only one gets it
(S41, S42). Inside a `RedisBatch` block the take carries the writes queued so far: one
round trip for both. Only the SHA-256 of the key is stored anywhere. When Redis
fails, a put goes to PostgreSQL, and a take that misses in Redis looks there too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

from redis.asyncio import Redis

from keystile.repositories.database import Database
from keystile.stores.redis import REDIS_FAILURES
from keystile.stores.redis_batch import RedisBatch

__all__ = ["ChallengeStore"]

_log = logging.getLogger(__name__)
_PREFIX = "keystile:challenge:"


class ChallengeStore:
    """Short-lived single-use values by secret key."""

    def __init__(
        self, redis: Redis, database: Database, *, batch: RedisBatch | None = None
    ) -> None:
        """With `batch`, a take sends the writes its open block has queued (`send_with`)."""
        self._redis = redis
        self._db = database
        self._batch = batch

    async def put(self, key: str, value: dict[str, Any], ttl: int) -> None:
        """Store `value` under `key` for `ttl` seconds."""
        digest, text = _digest(key), json.dumps(value, separators=(",", ":"))
        try:
            await self._redis.set(_PREFIX + digest.hex(), text, ex=ttl)
            return
        except REDIS_FAILURES:
            _log.warning("challenge stored in postgresql: redis unavailable")
        await self._db.execute(
            "WITH gone AS (DELETE FROM auth_challenges WHERE expires_at < now()) "
            "INSERT INTO auth_challenges (key_hash, value, expires_at) "
            "VALUES ($1, $2, now() + $3 * interval '1 second')",
            digest,
            text,
            ttl,
        )

    async def peek(self, key: str) -> dict[str, Any] | None:
        """Return the live value under `key` without using it up."""
        digest = _digest(key)
        raw: Any = None
        with contextlib.suppress(*REDIS_FAILURES):
            raw = await self._redis.get(_PREFIX + digest.hex())
        if raw is None:
            raw = await self._db.fetchval(
                "SELECT value FROM auth_challenges WHERE key_hash = $1 AND expires_at > now()",
                digest,
            )
        return _decode(raw)

    async def take(self, key: str) -> dict[str, Any] | None:
        """Return the live value under `key` and delete it: only one caller ever gets it."""
        digest = _digest(key)
        raw: Any = None
        name = _PREFIX + digest.hex()
        with contextlib.suppress(*REDIS_FAILURES):
            if self._batch is None:
                raw = await self._redis.getdel(name)
            else:
                (raw,) = await self._batch.send_with(lambda pipe: pipe.getdel(name))
        if raw is None:
            raw = await self._db.fetchval(
                "DELETE FROM auth_challenges WHERE key_hash = $1 AND expires_at > now() "
                "RETURNING value",
                digest,
            )
        return _decode(raw)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _decode(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return value if isinstance(value, dict) else None
