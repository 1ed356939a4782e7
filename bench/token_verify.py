"""How much the verified-token cache saves per bearer request (no I/O involved).

    .venv/bin/python bench/token_verify.py

Times a full access-token verification (header parse, kid lookup, Ed25519/ES256
signature, claim checks) against the cached path (SHA-256 of the token and a
dictionary lookup) that `TokenService.authenticate` takes for a token seen before.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import timeit
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from keystile.repositories.signing_keys import SigningKeyRecord
from keystile.services.access_tokens import AccessClaims, AccessTokenCodec
from keystile.services.keys import KeyRing, SecretBox
from keystile.stores.cache import LocalCache


class _MemoryKeys:
    """Key storage in memory: enough to build a ring without PostgreSQL."""

    def __init__(self) -> None:
        self.records: list[SigningKeyRecord] = []

    async def select_live_keys(self, fingerprint: bytes) -> list[SigningKeyRecord]:
        return self.records

    async def insert_first_key(
        self, fingerprint: bytes, record: SigningKeyRecord
    ) -> SigningKeyRecord | None:
        past = datetime.now(UTC) - timedelta(seconds=1)
        stored = replace(record, not_before=past, created_at=past)
        self.records.append(stored)
        return stored

    async def insert_next_key(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError


async def _noop() -> None:
    return None


def _measure(alg: str) -> None:
    ring = KeyRing(_MemoryKeys(), SecretBox(secrets.token_bytes(32)), algorithm=alg, notify=_noop)
    asyncio.run(ring.load())
    codec = AccessTokenCodec(ring, issuer="https://issuer", audience="api", ttl=900, leeway=30)
    token = codec.issue(uuid.uuid4(), 0, ["account"])
    cache: LocalCache[bytes, AccessClaims] = LocalCache(ttl=900)
    cache.set(hashlib.sha256(token.encode()).digest(), codec.verify(token))

    def cached() -> AccessClaims | None:
        return cache.get(hashlib.sha256(token.encode()).digest())

    rounds = 5000
    full = min(timeit.repeat(lambda: codec.verify(token), number=rounds, repeat=5)) / rounds
    hit = min(timeit.repeat(cached, number=rounds, repeat=5)) / rounds
    print(
        f"{alg:6} full verify {full * 1e6:7.1f} us   cached {hit * 1e6:5.1f} us   x{full / hit:.0f}"
    )


if __name__ == "__main__":
    for algorithm in ("EdDSA", "ES256"):
        _measure(algorithm)
