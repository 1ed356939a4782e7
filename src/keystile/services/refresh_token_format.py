"""The refresh token's format: an account selector a stranger cannot forge (S15, S27).

A refresh token is 87 base64url characters, 65 bytes:

    version (1 byte, 1) | user id (16) | secret (32) | tag (16)

The secret is 256 bits from the OS CSPRNG for the first token of a family and
HMAC(secret key, parent token) for its successors (services/tokens.py). The tag is
HMAC-SHA256 under a key derived from the server secret over everything before it,
cut to 128 bits. So the server learns whose token it is before spending it, and can
charge the account's refresh allowance first (S27): a token whose tag does not check
names nobody and is refused without a lookup, so no one can spend another account's
allowance without holding one of its tokens. The database still keeps only the SHA-256
of the whole token (S18), and the token is still no JWT (S15).

Tokens issued before the selector existed are 43 characters (the bare 32-byte secret);
they keep working, and their successors keep that form, until their family expires.
They name no account and are charged per client address only.

After the secret key is rotated, a token tagged under a previous key (a
`secret_key_fallbacks` entry) still names its account; its successor is made, and
tagged, under the current key, so a family moves to the current key at its next
rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from uuid import UUID

from keystile.secret_keys import SecretKeys

__all__ = ["LEGACY_LENGTH", "RefreshTokenFormat", "Selector"]

_VERSION = b"\x01"
_SECRET_BYTES = 32
_TAG_BYTES = 16
_TOKEN_BYTES = 1 + 16 + _SECRET_BYTES + _TAG_BYTES
TOKEN_LENGTH = 87  # base64url characters of 65 bytes, unpadded
LEGACY_LENGTH = 43  # base64url characters of 32 bytes, unpadded


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Selector:
    """The account a token names, and whether its tag is under a previous secret key."""

    account: UUID
    previous_key: bool


class RefreshTokenFormat:
    """Make refresh tokens that name their account, and read the account back."""

    def __init__(self, secret: bytes | SecretKeys) -> None:
        keys = SecretKeys.of(secret)
        self._successor_keys = keys.derive_all("refresh-token successor v1")
        self._tag_keys = keys.derive_all("refresh-token selector v1")

    def first(self, user_id: UUID) -> str:
        """Return the first refresh token of a family of `user_id`'s."""
        return _seal(self._tag_keys[0], user_id, secrets.token_bytes(_SECRET_BYTES))

    def successor(self, token: str, account: UUID | None) -> str:
        """Return the one token that may follow `token`: the same form, the same account.

        `account` is `account_of(token)`: None for an older token, whose successor keeps
        the older form.
        """
        return self._successor_under(0, token, account)

    def successors(self, token: str, account: UUID | None) -> list[str]:
        """Return the token that may follow `token` as made under the current secret key,
        then as made under each previous one (by a worker that ran before the rotation)."""
        return [self._successor_under(i, token, account) for i in range(len(self._tag_keys))]

    def _successor_under(self, index: int, token: str, account: UUID | None) -> str:
        key = self._successor_keys[index]
        secret = hmac.new(key, token.encode(), hashlib.sha256).digest()
        return _encode(secret) if account is None else _seal(self._tag_keys[index], account, secret)

    def account_of(self, token: str) -> UUID | None:
        """Return the user a token of this form names, or None (older form, or forged)."""
        selector = self.selector(token)
        return None if selector is None else selector.account

    def selector(self, token: str) -> Selector | None:
        """Return whose token this is, and under which key it was tagged; None if nobody's.

        The tag is compared under every key (current first), whichever matches.
        """
        raw = self._decode(token)
        if raw is None:
            return None
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        found = None
        for index, key in enumerate(self._tag_keys):
            if hmac.compare_digest(_tag(key, body), tag) and found is None:
                found = index
        if found is None:
            return None
        return Selector(UUID(bytes=body[1:17]), previous_key=found > 0)

    @staticmethod
    def is_older_form(token: str) -> bool:
        """True for a token of the form issued before tokens named their account."""
        return len(token) == LEGACY_LENGTH

    @staticmethod
    def _decode(token: str) -> bytes | None:
        if len(token) != TOKEN_LENGTH:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=")
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _TOKEN_BYTES or raw[:1] != _VERSION or _encode(raw) != token:
            return None  # the last check refuses spare bits set in the final character
        return raw


def _seal(tag_key: bytes, user_id: UUID, secret: bytes) -> str:
    body = _VERSION + user_id.bytes + secret
    return _encode(body + _tag(tag_key, body))


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:_TAG_BYTES]
