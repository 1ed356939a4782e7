"""Seal cache values before they go to Redis: encrypted and authenticated (Fernet).

The user-by-email cache holds password hashes. Sealed, a reader of Redis learns
nothing from them, and a writer cannot plant a record (say, a hash of a password it
knows) because unsealing checks the MAC under a key only keystile has.

The caches seal and unseal under the current secret key only: after a rotation their
entries simply miss. The mail outbox, which must not lose a message, also opens what
the previous secret keys sealed (`previous`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["Sealer", "derive_key"]

V = TypeVar("V")


def derive_key(secret: bytes, purpose: str) -> bytes:
    """Return a 32-byte key for one purpose, so no two features share the app secret."""
    return hmac.new(secret, f"keystile {purpose}".encode(), hashlib.sha256).digest()


class Sealer(Generic[V]):
    """Turn values into sealed strings and back; for `TieredCache`'s encode/decode."""

    def __init__(
        self,
        key: bytes,
        *,
        encode: Callable[[V], Any],
        decode: Callable[[Any], V],
        previous: Sequence[bytes] = (),
    ) -> None:
        """`previous`: keys whose sealed values still unseal (never used to seal)."""
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._previous = [Fernet(base64.urlsafe_b64encode(old)) for old in previous]
        self._encode = encode
        self._decode = decode

    def seal(self, value: V) -> str:
        plain = json.dumps(self._encode(value), separators=(",", ":")).encode()
        return self._fernet.encrypt(plain).decode()

    def unseal(self, sealed: Any) -> V:
        """Return the value; raise ValueError if it was not sealed with this key."""
        return self.unseal_stale(sealed)[0]

    def unseal_stale(self, sealed: Any) -> tuple[V, bool]:
        """Return the value, and whether a previous key sealed it; ValueError if none did."""
        if not isinstance(sealed, str):
            raise ValueError("not a sealed value")
        for index, fernet in enumerate((self._fernet, *self._previous)):
            try:
                plain = fernet.decrypt(sealed.encode())
            except InvalidToken:
                continue
            return self._decode(json.loads(plain)), index > 0
        raise ValueError("sealed value does not verify")
