"""`CatalogExtension`: how the catalogue plugs into keystile's composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from quart import Blueprint

from keystile.ext import Services
from keystile_catalog.repository import PostgresProductRepository
from keystile_catalog.service import CatalogService
from keystile_catalog.web import blueprint

__all__ = ["CatalogExtension"]


class CatalogExtension:
    """Serve the product catalogue; its table comes from its own migrations."""

    name = "catalog"
    # `keystile migrate` runs these (own version table) only where the extension is enabled.
    migrations = Path(__file__).parent / "migrations"

    def blueprints(self) -> Sequence[Blueprint]:
        return (blueprint,)

    @asynccontextmanager
    async def build(self, core: Services) -> AsyncIterator[CatalogService]:
        # Shares the core pool and purge hook: an extension opens no connections of its own.
        yield CatalogService(PostgresProductRepository(core.database), core.purger)
