"""`CatalogExtension`: how the catalogue plugs into keystile's composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from quart import Blueprint

from examples.catalog.repository import PostgresProductRepository
from examples.catalog.service import CatalogService
from examples.catalog.web import blueprint
from keystile.container import Services

__all__ = ["CatalogExtension"]


class CatalogExtension:
    """Serve the product catalogue; its table comes from migration 0005."""

    name = "catalog"

    def blueprints(self) -> Sequence[Blueprint]:
        return (blueprint,)

    @asynccontextmanager
    async def build(self, core: Services) -> AsyncIterator[CatalogService]:
        # Shares the core pool and purge hook: an extension opens no connections of its own.
        yield CatalogService(PostgresProductRepository(core.database), core.purger)
