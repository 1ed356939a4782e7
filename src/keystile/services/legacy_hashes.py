"""Password hashes inherited from the Flask app: werkzeug pbkdf2/scrypt and bcrypt (S4).

They verify with the libraries that made them (werkzeug's `check_password_hash`,
the `bcrypt` package) and are replaced by argon2id on the next successful login.
Their cost parameters travel inside the hash, so `describe_problem` refuses ones
that would tie up a hashing thread for minutes before they are stored.
"""

from __future__ import annotations

import re

import bcrypt
from werkzeug.security import check_password_hash

__all__ = ["LEGACY_SCHEMES", "describe_problem", "identify", "verify_legacy"]

LEGACY_SCHEMES = ("pbkdf2", "scrypt", "bcrypt")

# Bounds far above any sane deployment (werkzeug's defaults: 1,000,000 and 2**15).
_MAX_PBKDF2_ITERATIONS = 10_000_000
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_PBKDF2_DIGESTS = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})
# bcrypt hashed at most 72 bytes of the password; longer ones were silently cut.
_BCRYPT_MAX_BYTES = 72

_ARGON2 = re.compile(
    r"^\$argon2(?:id|i|d)\$v=\d+\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$"
)
_MAX_ARGON2_MEMORY_KIB = 1024 * 1024
_MAX_ARGON2_TIME_COST = 64
_BCRYPT = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_PBKDF2 = re.compile(r"^pbkdf2:([a-z0-9]+)(?::(\d+))?\$[^$]+\$[0-9a-f]+$")
_SCRYPT = re.compile(r"^scrypt(?::(\d+):(\d+):(\d+))?\$[^$]+\$[0-9a-f]+$")


def identify(password_hash: str) -> str | None:
    """Return "argon2", "pbkdf2", "scrypt" or "bcrypt" for a hash of that shape, else None."""
    if _ARGON2.match(password_hash):
        return "argon2"
    if _BCRYPT.match(password_hash):
        return "bcrypt"
    if _PBKDF2.match(password_hash):
        return "pbkdf2"
    if _SCRYPT.match(password_hash):
        return "scrypt"
    return None


def describe_problem(password_hash: str) -> str | None:
    """Return why this hash must not be stored, or None if keystile can verify it."""
    scheme = identify(password_hash)
    if scheme is None:
        return "unrecognised hash format (expected argon2, pbkdf2:, scrypt: or $2b$)"
    if scheme == "argon2":
        match = _ARGON2.match(password_hash)
        assert match is not None
        memory_kib, time_cost, lanes = (int(match.group(i)) for i in (1, 2, 3))
        if memory_kib > _MAX_ARGON2_MEMORY_KIB or time_cost > _MAX_ARGON2_TIME_COST or lanes < 1:
            return "argon2 parameters out of range"
    if scheme == "pbkdf2":
        match = _PBKDF2.match(password_hash)
        assert match is not None
        digest, iterations = match.group(1), match.group(2)
        if digest not in _PBKDF2_DIGESTS:
            return f"unsupported pbkdf2 digest {digest!r}"
        if iterations is not None and not 1 <= int(iterations) <= _MAX_PBKDF2_ITERATIONS:
            return f"pbkdf2 iterations out of range (1..{_MAX_PBKDF2_ITERATIONS})"
    if scheme == "scrypt":
        match = _SCRYPT.match(password_hash)
        assert match is not None
        if match.group(1) is not None:
            n, r, p = (int(match.group(i)) for i in (1, 2, 3))
            if n < 2 or n & (n - 1) or r < 1 or p < 1 or 128 * n * r * p > _MAX_SCRYPT_MEMORY:
                return "scrypt parameters out of range"
    if scheme == "bcrypt":
        match = _BCRYPT.match(password_hash)
        assert match is not None
        if not 4 <= int(match.group(1)) <= 31:
            return "bcrypt cost out of range (4..31)"
    return None


def verify_legacy(password_hash: str, password: str) -> bool:
    """Return whether `password` matches a pbkdf2, scrypt or bcrypt hash (blocking: run off-loop).

    Malformed hashes never match. The password is the NFKC-normalised one keystile
    sees at login; an account whose old password was not already in that form must
    reset it.
    """
    scheme = identify(password_hash)
    if scheme == "bcrypt":
        try:
            return bcrypt.checkpw(password.encode()[:_BCRYPT_MAX_BYTES], password_hash.encode())
        except ValueError:
            return False
    if scheme in ("pbkdf2", "scrypt") and describe_problem(password_hash) is None:
        try:
            return check_password_hash(password_hash, password)
        except ValueError:
            return False
    return False
