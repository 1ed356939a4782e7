"""Products in PostgreSQL (table `catalog_products`, created by `migrations/`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from keystile.ext import Database

__all__ = ["PostgresProductRepository", "Product", "ProductRepository"]

_COLUMNS = "sku, name, description, price_cents, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class Product:
    """A product as stored."""

    sku: str
    name: str
    description: str
    price_cents: int
    created_at: datetime
    updated_at: datetime


def _product(row: asyncpg.Record) -> Product:
    return Product(**{key: row[key] for key in Product.__slots__})


class ProductRepository(Protocol):
    """What the catalogue service needs from product storage."""

    async def select_products(self, after_sku: str, limit: int) -> list[Product]: ...
    async def select_product(self, sku: str) -> Product | None: ...
    async def upsert_product(
        self, sku: str, name: str, description: str, price_cents: int
    ) -> tuple[Product, bool]: ...


class PostgresProductRepository:
    """Every query here is served by the primary key on sku."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def select_products(self, after_sku: str, limit: int) -> list[Product]:
        """Return up to `limit` products with sku after `after_sku`, in sku order (keyset)."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM catalog_products WHERE sku > $1 ORDER BY sku LIMIT $2",
            after_sku,
            limit,
        )
        return [_product(row) for row in rows]

    async def select_product(self, sku: str) -> Product | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM catalog_products WHERE sku = $1", sku
        )
        return None if row is None else _product(row)

    async def upsert_product(
        self, sku: str, name: str, description: str, price_cents: int
    ) -> tuple[Product, bool]:
        """Insert or replace a product; the flag says whether it was new."""
        row = await self._db.fetchrow(
            f"INSERT INTO catalog_products (sku, name, description, price_cents) "
            f"VALUES ($1, $2, $3, $4) ON CONFLICT (sku) DO UPDATE SET "
            f"name = excluded.name, description = excluded.description, "
            f"price_cents = excluded.price_cents, updated_at = now() "
            f"RETURNING {_COLUMNS}, (xmax = 0) AS inserted",
            sku,
            name,
            description,
            price_cents,
        )
        assert row is not None  # an upsert always returns its row
        return _product(row), bool(row["inserted"])
