"""Where a browser may be sent after login: same-site relative paths only (S12)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

__all__ = ["safe_next"]

_MAX_LENGTH = 2048
_MAX_DECODES = 4


def _is_local_path(value: str) -> bool:
    # Browsers treat "\" like "/" and drop tabs and newlines inside URLs, so
    # "/\evil.example" and "/\t/evil.example" both lead off-site.
    if not value.startswith("/") or value.startswith("//"):
        return False
    if "\\" in value or any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc


def safe_next(value: str | None, default: str = "/account") -> str:
    """Return `value` if it is a path on this site, else `default`.

    The path is checked as given and after each round of percent-decoding, so
    encoded variants (`/%2F/evil`, `/%5Cevil`, `%2F%2Fevil`) are refused too.
    """
    if not value or len(value) > _MAX_LENGTH:
        return default
    candidate = value
    for _ in range(_MAX_DECODES):
        if not _is_local_path(candidate):
            return default
        decoded = unquote(candidate)
        if decoded == candidate:
            return value
        candidate = decoded
    return default
