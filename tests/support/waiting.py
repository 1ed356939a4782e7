"""Waiting in tests for state that no event announces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], bool], *, within: float = 10.0) -> None:
    """Return once `condition()` is true; fail after `within` seconds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - a counter or a metric, not an event
            await asyncio.sleep(0.01)
