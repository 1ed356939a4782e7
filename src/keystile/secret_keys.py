"""The secret key and the previous ones still accepted: rotation without logging anyone out.

Everything keyed by the secret key (docs/operations.md, "Rotating the secret key")
signs, seals, digests and tags under the current key only, and verifies, opens and
matches under the current key first, then each previous one (`secret_key_fallbacks`),
as Django's SECRET_KEY_FALLBACKS and itsdangerous's key lists do. A match under a
previous key counts in `keystile_secret_key_fallback_used_total{purpose}`, so an
operator sees when the fallbacks are no longer needed and can drop them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from keystile import metrics
from keystile.settings import Settings, SettingsError
from keystile.stores.sealing import derive_key

__all__ = ["SecretKeys", "note_fallback_used", "read_secret_keys"]

_log = logging.getLogger(__name__)
_logged: set[str] = set()
_logged_lock = threading.Lock()  # the hashing threads may note uses too


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

    def derive(self, purpose: str) -> bytes:
        """Return the current key's derived key for `purpose`: the one to make things with."""
        return derive_key(self.current, purpose)

    def derive_all(self, purpose: str) -> tuple[bytes, ...]:
        """Return the derived keys for `purpose` to check with: the current one first."""
        return tuple(derive_key(key, purpose) for key in self.all)


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
