"""Count the PostgreSQL statements a piece of keystile runs (asyncpg query loggers)."""

from __future__ import annotations

import asyncpg

__all__ = ["Statements"]


class Statements:
    """Every statement any pooled connection of `pool` runs from now on."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def observe(self, pool: asyncpg.Pool) -> None:
        held = [await pool.acquire() for _ in range(pool.get_max_size())]
        for connection in held:
            connection.add_query_logger(lambda record: self.seen.append(record.query))
        for connection in held:
            await pool.release(connection)
