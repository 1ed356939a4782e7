"""The secret key and the previous ones still accepted: rotation without logging anyone out.

Everything keyed by the secret key (docs/operations.md, "Rotating the secret key")
signs, seals, digests and tags under the current key only, and verifies, opens and
matches under the current key first, then each previous one (`secret_key_fallbacks`),
as Django's SECRET_KEY_FALLBACKS and itsdangerous's key lists do. A match under a
previous key counts in `keystile_secret_key_fallback_used_total{purpose}`, so an
operator sees when the fallbacks are no longer needed and can drop them.

What is stored and can outlive a rotation unused (API keys' and client secrets' HMACs,
recovery codes' HMACs, sealed TOTP secrets) records the id of the key it was made under
(`key_id`), so `keystile secret-keys status` can say what still needs each fallback:
the counters only see what is used.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keystile import metrics
from keystile.settings import Settings, SettingsError
from keystile.stores.sealing import derive_key

__all__ = ["KeyUse", "SecretKeys", "key_id", "note_fallback_used", "read_secret_keys"]

_log = logging.getLogger(__name__)
_logged: set[str] = set()
_logged_lock = threading.Lock()  # the hashing threads may note uses too
_KEY_ID = "secret key id v1"  # the purpose of the key derived to name a key


def key_id(key: bytes) -> str:
    """Return the id of a secret key: 16 hex characters that name it and reveal nothing.

    The first 8 bytes of a key derived from it for this alone (`derive_key`): stored in
    the clear beside what was made under the key, it tells keys apart and nothing more.
    """
    return derive_key(key, _KEY_ID)[:8].hex()


@dataclass(frozen=True, slots=True)
class SecretKeys:
    """The current secret key and the previous ones, most recent first.

    Built once by the composition root from `Settings.read_secret_key` and
    `Settings.read_secret_key_fallbacks`; a previous key is never used to make anything.
    """

    current: bytes
    previous: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, keys: bytes | SecretKeys) -> SecretKeys:
        """Return `keys`, or a bare key as `SecretKeys` without previous ones."""
        return keys if isinstance(keys, SecretKeys) else cls(keys)

    @property
    def all(self) -> tuple[bytes, ...]:
        """Return the current key, then each previous one."""
        return (self.current, *self.previous)

    @property
    def ids(self) -> tuple[str, ...]:
        """Return the ids (`key_id`) of the current key, then of each previous one."""
        return tuple(key_id(key) for key in self.all)

    def derive(self, purpose: str) -> bytes:
        """Return the current key's derived key for `purpose`: the one to make things with."""
        return derive_key(self.current, purpose)

    def derive_all(self, purpose: str) -> tuple[bytes, ...]:
        """Return the derived keys for `purpose` to check with: the current one first."""
        return tuple(derive_key(key, purpose) for key in self.all)


@dataclass(frozen=True, slots=True)
class KeyUse:
    """How many live things of one kind are under which secret key (`secret-keys status`).

    `fallbacks` follows the order of `secret_key_fallbacks`; `unconfigured` counts things
    under a key that is neither current nor a fallback (already refused); `unrecorded`
    those made before keystile recorded the key (NULL `secret_key_id`).
    """

    current: int
    fallbacks: tuple[int, ...]
    unconfigured: int
    unrecorded: int

    @classmethod
    def of(cls, ids: Sequence[str], counts: Mapping[str | None, int]) -> KeyUse:
        """Sort `counts` (by recorded key id, None: not recorded) by `ids`, current first."""
        return cls(
            current=counts.get(ids[0], 0),
            fallbacks=tuple(counts.get(kid, 0) for kid in ids[1:]),
            unconfigured=sum(n for kid, n in counts.items() if kid is not None and kid not in ids),
            unrecorded=counts.get(None, 0),
        )

    @property
    def total(self) -> int:
        return self.current + sum(self.fallbacks) + self.unconfigured + self.unrecorded


def read_secret_keys(settings: Settings) -> SecretKeys:
    """Return the secret keys the settings name; `SettingsError` without a current one."""
    current = settings.read_secret_key()
    if current is None:
        raise SettingsError("secret_key (KEYSTILE_SECRET_KEY or secret_key_file): required")
    return SecretKeys(current, tuple(settings.read_secret_key_fallbacks()))


def note_fallback_used(purpose: str) -> None:
    """Count that a previous secret key was the one that matched, for `purpose`.

    Logged at info once per purpose per process (never the key, nor what it matched).
    """
    metrics.SECRET_KEY_FALLBACK_USED.labels(purpose).inc()
    with _logged_lock:
        if purpose in _logged:
            return
        _logged.add(purpose)
    _log.info(
        "a previous secret key (secret_key_fallbacks) was used",
        extra={"purpose": purpose},
    )
