"""Secrets that secret scanners recognise and servers check cheaply (S43).

A key reads `<prefix><body><checksum>`: a fixed prefix (`ks_pat_`, `ks_cs_`), random
base62 characters from the OS CSPRNG, and six base62 characters of the CRC-32 of all
that precedes them. The checksum is no security (anyone can compute it); it lets a
scanner confirm a match offline and lets us refuse a mistyped or truncated key
before any lookup. What is stored is an HMAC-SHA256 under a key derived from the
server secret: a check is microseconds of CPU, never a password hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from collections.abc import Sequence

from keystile.secret_keys import SecretKeys

__all__ = ["CHECKSUM_LENGTH", "Hmac", "has_valid_checksum", "random_base62", "with_checksum"]

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
CHECKSUM_LENGTH = 6  # 62**6 > 2**32: every CRC-32 fits


def random_base62(length: int) -> str:
    """Return `length` random base62 characters (5.95 bits each) from the OS CSPRNG."""
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode())
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def with_checksum(body: str) -> str:
    """Return `body` followed by its checksum."""
    return body + _checksum(body)


def has_valid_checksum(key: str) -> bool:
    """True when the last characters of `key` are the checksum of the rest."""
    if len(key) <= CHECKSUM_LENGTH:
        return False
    body, checksum = key[:-CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
    return hmac.compare_digest(_checksum(body), checksum)


class Hmac:
    """HMAC-SHA256 of secrets under the current key, and their constant-time comparison.

    `previous` are the same purpose's keys derived from the previous secret keys
    (`SecretKeys.derive_all`): a secret stored under one of them still matches.
    `key_id` names the secret key `key` is derived from (`secret_keys.key_id`), stored
    beside each digest made; None where it is not known (an `Hmac` of a bare key).
    """

    def __init__(
        self, key: bytes, previous: Sequence[bytes] = (), *, key_id: str | None = None
    ) -> None:
        self._keys = (key, *previous)
        self.key_id = key_id
        # Compared against when the id is unknown, so that path costs the same.
        self.dummy = self.digest("unknown")

    @classmethod
    def under(cls, keys: SecretKeys, purpose: str) -> Hmac:
        """Return HMACs for `purpose`: made under the current secret key, matched under all."""
        current, *previous = keys.derive_all(purpose)
        return cls(current, previous, key_id=keys.ids[0])

    def digest(self, text: str) -> bytes:
        """Return what is stored for `text`: its HMAC under the current key."""
        return hmac.new(self._keys[0], text.encode(), hashlib.sha256).digest()

    def digests_under_each(self, text: str) -> list[bytes]:
        """Return `text`'s HMAC under the current key, then under each previous one."""
        return [hmac.new(key, text.encode(), hashlib.sha256).digest() for key in self._keys]

    def match(self, text: str, expected: bytes) -> int | None:
        """Return the index of the key `expected` is `text`'s HMAC under (0: the current one).

        Every key's HMAC is computed and compared, whichever matches: the time taken says
        neither whether one did nor which (nor, against `dummy`, whether the id exists).
        """
        found = None
        for index, digest in enumerate(self.digests_under_each(text)):
            if hmac.compare_digest(digest, expected) and found is None:
                found = index
        return found

    def matches(self, text: str, expected: bytes) -> bool:
        return self.match(text, expected) is not None
