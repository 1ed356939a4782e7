"""Purge shared HTTP caches (Varnish, a CDN) by surrogate key after a write.

Public responses carry `Surrogate-Key: key1 key2` (see `web/caching.py`); a service
that changes the data behind them calls `purger.purge(keys)`. The default does
nothing (responses then live until their s-maxage runs out); `VarnishPurger` sends
one `BAN` per configured Varnish with the keys, which `deploy/varnish/keystile.vcl`
turns into a ban on every object tagged with any of them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Collection, Sequence
from typing import Protocol

import httpx

__all__ = [
    "PURGE_KEYS_HEADER",
    "NoPurge",
    "SurrogatePurger",
    "VarnishPurger",
    "check_surrogate_key",
]

_log = logging.getLogger(__name__)

# The VCL builds a regular expression from the keys: allow no character that means
# anything in one, and no space (the separator).
_KEY = re.compile(r"[A-Za-z0-9_:-]{1,128}")
PURGE_KEYS_HEADER = "X-Purge-Surrogate-Keys"


def check_surrogate_key(key: str) -> str:
    """Return `key` if it is a valid surrogate key, else raise ValueError."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"surrogate key {key!r}: use 1-128 of A-Z a-z 0-9 _ : -")
    return key


class SurrogatePurger(Protocol):
    """Removes cached responses tagged with any of the keys from shared caches."""

    async def purge(self, keys: Collection[str]) -> None:
        """Purge every cached response tagged with any of `keys`; never raise.

        A failed purge is logged: the write it follows has already happened, and the
        stale copies expire with their s-maxage.
        """
        ...


class NoPurge:
    """The default: no shared cache to tell."""

    async def purge(self, keys: Collection[str]) -> None:
        return None


class VarnishPurger:
    """Send `BAN` with the keys to every Varnish in `urls`, concurrently, with a deadline."""

    def __init__(self, urls: Sequence[str], *, timeout: float) -> None:
        self._urls = tuple(urls)
        self._client = httpx.AsyncClient(timeout=timeout)

    async def purge(self, keys: Collection[str]) -> None:
        if not keys:
            return
        header = " ".join(sorted({check_surrogate_key(key) for key in keys}))
        await asyncio.gather(*(self._ban(url, header) for url in self._urls))

    async def _ban(self, url: str, keys: str) -> None:
        try:
            response = await self._client.request("BAN", url, headers={PURGE_KEYS_HEADER: keys})
        except httpx.HTTPError as exc:
            _log.warning("cache purge failed", extra={"url": url, "error": type(exc).__name__})
            return
        if response.status_code != 200:
            _log.warning("cache purge refused", extra={"url": url, "status": response.status_code})

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()
