"""Count the round trips this process makes to Redis: one per command or pipeline sent."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

__all__ = ["round_trips"]

# The first element of each RESP array sent: the command's name.
_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")

# What a connection sends by itself (handshake, health checks), not the code under test.
_BACKGROUND = {"HELLO", "PING", "CLIENT", "SELECT", "AUTH", "INFO"}


@contextmanager
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Yield a list that gets, for each write to a Redis socket, the commands it carried.

    A connection's handshakes and health checks are left out. Every connection of this
    process is counted (the app's and the test's own), by wrapping redis-py's one
    method that sends, which still sends.
    """
    sent: list[list[str]] = []
    send = AbstractConnection.send_packed_command

    async def counting(
        self: AbstractConnection, command: bytes | str | Iterable[bytes], *args: Any, **kwargs: Any
    ) -> None:
        data = command.encode() if isinstance(command, str) else command
        raw = data if isinstance(data, bytes) else b"".join(data)
        names = [name.decode().upper() for name in _COMMAND.findall(raw)]
        if not set(names) <= _BACKGROUND:
            sent.append(names)
        await send(self, command, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(AbstractConnection, "send_packed_command", counting)
        yield sent
