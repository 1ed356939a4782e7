"""Signing keys: encrypted at rest, parsed once, rotated without downtime (S13, S19).

Each worker holds a `KeyRing` of parsed key objects. Rotation is a schedule written
to PostgreSQL: a next key is published at once (JWKS), signs from `not_before` on,
and the keys it replaces keep verifying until `retired_at`, the longest token
lifetime later. Because the states follow from timestamps, a worker needs a
reload only when rows are added; it reloads periodically and at once when a
rotation message arrives, so no restart is ever needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from keystile.errors import Conflict, DependencyUnavailable
from keystile.repositories.signing_keys import SigningKeyRecord, SigningKeyRepository
from keystile.secret_keys import SecretKeys, note_fallback_used
from keystile.tasks import stop_if_cancelled

__all__ = ["KeyRing", "SecretBox", "SigningKey", "generate_signing_key"]

_log = logging.getLogger(__name__)

_KEY_TYPES: dict[str, tuple[type[Any], type[Any]]] = {
    "EdDSA": (Ed25519PublicKey, Ed25519PrivateKey),
    "ES256": (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey),
}
_THUMBPRINT_MEMBERS = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SecretBox:
    """AES-256-GCM under a key derived from the app secret; the kid is bound as AAD.

    `purpose` names what is sealed, so each use has a key of its own (TOTP secrets
    use "totp-secret", bound to their user's id). Given `SecretKeys`, it seals under
    the current secret key and opens under it or any previous one.
    """

    def __init__(self, secret: bytes | SecretKeys, *, purpose: str = "signing-key") -> None:
        keys = SecretKeys.of(secret)
        self._purpose = purpose.replace("-", "_")  # the fallback metric's label
        self._aeads = [AESGCM(key) for key in keys.derive_all(f"{purpose} encryption v1")]
        # Names the secret without revealing it: keys of other secrets are not ours. The
        # previous keys' too: keys sealed under them are still this deployment's.
        self.fingerprints = tuple(key[:16] for key in keys.derive_all("signing-key fingerprint v1"))
        self.fingerprint = self.fingerprints[0]

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aeads[0].encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """Decrypt; raise `cryptography.exceptions.InvalidTag` if tampered with."""
        return self.open_stale(sealed, context)[0]

    def open_stale(self, sealed: bytes, context: bytes) -> tuple[bytes, bool]:
        """Decrypt, and say whether it was sealed under a previous secret key (to seal again).

        Raise `cryptography.exceptions.InvalidTag` if no key opens it.
        """
        plaintext, index = self._open(sealed, context)
        if index:
            note_fallback_used(self._purpose)
        return plaintext, index > 0

    def key_index(self, sealed: bytes, context: bytes) -> int | None:
        """Return which secret key opens `sealed` (0: the current one, then each previous
        one in order), or None if none does. For reports: no fallback use is counted."""
        try:
            return self._open(sealed, context)[1]
        except InvalidTag:
            return None

    def _open(self, sealed: bytes, context: bytes) -> tuple[bytes, int]:
        for index, aead in enumerate(self._aeads):
            try:
                return aead.decrypt(sealed[:12], sealed[12:], context), index
            except InvalidTag:
                continue
        raise InvalidTag()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One parsed key: objects ready for PyJWT, and its place in the rotation schedule."""

    kid: str
    alg: str
    public_jwk: dict[str, Any]
    public_key: Ed25519PublicKey | ec.EllipticCurvePublicKey
    private_key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey | None
    not_before: datetime
    retired_at: datetime | None

    def verifies_at(self, now: datetime) -> bool:
        return self.retired_at is None or now < self.retired_at

    def signs_at(self, now: datetime) -> bool:
        return self.private_key is not None and self.not_before <= now and self.verifies_at(now)


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: a kid derived from the key itself."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def generate_signing_key(alg: str, box: SecretBox) -> SigningKeyRecord:
    """Make a new key pair; return it as a record whose private part is sealed by `box`."""
    private: Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if alg == "EdDSA":
        private = Ed25519PrivateKey.generate()
        jwk = dict(OKPAlgorithm.to_jwk(private.public_key(), as_dict=True))
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = dict(ECAlgorithm.to_jwk(private.public_key(), as_dict=True))
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    kid = _thumbprint(jwk)
    jwk.update(kid=kid, alg=alg, use="sig")
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    epoch = datetime.fromtimestamp(0, UTC)
    return SigningKeyRecord(
        kid=kid,
        alg=alg,
        public_jwk=jwk,
        private_key=box.seal(der, kid.encode()),
        not_before=epoch,
        retired_at=None,
        created_at=epoch,
    )


def _parse(record: SigningKeyRecord, box: SecretBox) -> SigningKey:
    expected = _KEY_TYPES[record.alg]
    algorithm = OKPAlgorithm if record.alg == "EdDSA" else ECAlgorithm
    public_key = algorithm.from_jwk(json.dumps(record.public_jwk))
    if not isinstance(public_key, expected[0]):
        raise ValueError(f"signing key {record.kid}: public JWK does not match {record.alg}")
    private_key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey | None = None
    try:
        loaded = serialization.load_der_private_key(
            box.open(record.private_key, record.kid.encode()), password=None
        )
    except (InvalidTag, ValueError):
        _log.error("signing key undecryptable; it only verifies", extra={"kid": record.kid})
    else:
        if isinstance(loaded, expected[1]):
            private_key = loaded
    return SigningKey(
        kid=record.kid,
        alg=record.alg,
        public_jwk=record.public_jwk,
        public_key=public_key,
        private_key=private_key,
        not_before=record.not_before,
        retired_at=record.retired_at,
    )


class KeyRing:
    """This worker's parsed signing keys, reloaded from PostgreSQL when they change.

    `version` moves on whenever the set of keys changes, so holders of derived
    state (the verified-token cache, the JWKS body) know to drop it.
    """

    def __init__(
        self,
        repository: SigningKeyRepository,
        box: SecretBox,
        *,
        algorithm: str,
        notify: Callable[[], Awaitable[object]],
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._repository = repository
        self._box = box
        self._algorithm = algorithm
        self._notify = notify
        self._clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._jwks: tuple[tuple[str, ...], bytes] | None = None
        self._wake = asyncio.Event()
        self.version = 0

    async def load(self) -> None:
        """Create the first key if this deployment has none usable, then load every key."""
        if not any(key.signs_at(self._clock()) for key in self._keys.values()):
            record = generate_signing_key(self._algorithm, self._box)
            if await self._repository.insert_first_key(self._box.fingerprints, record):
                _log.info("signing key created", extra={"kid": record.kid})
        await self.refresh()

    async def refresh(self, *, from_replica: bool = False) -> bool:
        """Reload keys from PostgreSQL; return True if anything changed.

        `from_replica`: read the read replica, if one is set (the periodic reload). A
        replica may lag this worker's own last read of the primary, so what it returns
        only adds: a loaded key it lacks is kept, and a retirement it has not seen yet
        is not undone (rotations only ever add keys and set `retired_at`).
        """
        lagging = from_replica and self._repository.has_replica
        records = await self._repository.select_live_keys(
            self._box.fingerprints, from_replica=from_replica
        )
        keys: dict[str, SigningKey] = {}
        for record in records:
            known = self._keys.get(record.kid)
            retired_at = record.retired_at
            if lagging and known is not None and retired_at is None:
                retired_at = known.retired_at
            if known is None:
                keys[record.kid] = _parse(record, self._box)
            elif (known.not_before, known.retired_at) != (record.not_before, retired_at):
                # The schedule moved (an operator promoting or retiring early): keep the
                # parsed key objects, take the new times.
                keys[record.kid] = replace(
                    known, not_before=record.not_before, retired_at=retired_at
                )
            else:
                keys[record.kid] = known  # parsed once, not on every reload
        if lagging:
            now = self._clock()
            for kid, key in self._keys.items():
                if kid not in keys and key.verifies_at(now):
                    keys[kid] = key
        if keys == self._keys:
            return False
        self._keys = keys
        self.version += 1
        return True

    def signing_key(self) -> SigningKey:
        """Return the key to sign with now: the most recently promoted one."""
        now = self._clock()
        candidates = [key for key in self._keys.values() if key.signs_at(now)]
        if not candidates:
            raise DependencyUnavailable("signing_keys")
        return max(candidates, key=lambda key: key.not_before)

    def verification_key(self, kid: str) -> SigningKey | None:
        """Return the key named `kid` if it still verifies; a plain dictionary lookup."""
        key = self._keys.get(kid)
        if key is None or not key.verifies_at(self._clock()):
            return None
        return key

    def jwks(self) -> bytes:
        """Return the JWKS document: next, current and previous keys (S19), as JSON bytes."""
        now = self._clock()
        published = sorted(
            (key for key in self._keys.values() if key.verifies_at(now)),
            key=lambda key: key.not_before,
        )
        kids = tuple(key.kid for key in published)
        if self._jwks is None or self._jwks[0] != kids:
            body = json.dumps({"keys": [key.public_jwk for key in published]}, sort_keys=True)
            self._jwks = (kids, body.encode())
        return self._jwks[1]

    async def rotate(
        self, *, promote_after: timedelta, retire_after: timedelta
    ) -> tuple[SigningKey, list[str]]:
        """Add the next key, signing from `promote_after` on; retire the keys it replaces
        `retire_after` after that (at least the longest token lifetime). Every worker
        is told to reload. Raise `Conflict` if a rotation is already pending.
        """
        record = generate_signing_key(self._algorithm, self._box)
        inserted = await self._repository.insert_next_key(
            self._box.fingerprints, record, promote_after=promote_after, retire_after=retire_after
        )
        if inserted is None:
            raise Conflict("A rotation is already pending; wait until its key is promoted.")
        stored, retiring = inserted
        await self.refresh()
        await self._notify()
        return _parse(stored, self._box), retiring

    def all_keys(self) -> list[SigningKey]:
        """Return every loaded key, oldest first."""
        return sorted(self._keys.values(), key=lambda key: key.not_before)

    def poke(self, _: str | None = None) -> None:
        """Ask for a reload soon (from a pub/sub message); never blocks."""
        self._wake.set()

    async def run(self, interval: float) -> None:
        """Reload every `interval` seconds, or sooner when poked, until cancelled.

        The periodic reload reads the read replica (if one is set): it serves the JWKS
        and tolerates lag. A poke means another worker just rotated the keys, so that
        reload reads the primary, which has the new key for sure.
        Run it with `keystile.tasks.background`, which restarts it after an unexpected error.
        """
        while True:
            # A refresh whose cancel asyncpg's 3.11 wait_for swallowed (it returns the rows
            # that arrived with the cancel) would otherwise wait a whole interval more.
            stop_if_cancelled()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that
            # arrives just as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            poked = self._wake.is_set()
            self._wake.clear()
            try:
                if await self.refresh(from_replica=not poked):
                    _log.info("signing keys reloaded", extra={"kids": list(self._keys)})
            except DependencyUnavailable:
                # Keep the keys we have: verification needs no database (S31).
                _log.warning("signing keys not reloaded: postgresql unavailable")
            except Exception:
                # `background` logs it and runs this loop again, keys untouched (`refresh`
                # replaces them only when it has parsed every row). A poke is a rotation
                # elsewhere: keep it, so the restarted loop reloads from the primary at once.
                if poked:
                    self._wake.set()
                raise
