"""The catalogue's use cases: read products, and change one then purge shared caches."""

from __future__ import annotations

import re

from keystile.ext import InvalidInput, NotFound, SurrogatePurger
from keystile_catalog.repository import Product, ProductRepository

__all__ = ["PRODUCTS_KEY", "CatalogService", "product_key"]

_SKU = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PAGE = 100

# Surrogate keys: every list page carries PRODUCTS_KEY, a product's page its own key.
PRODUCTS_KEY = "catalog-products"


def product_key(sku: str) -> str:
    """Return the surrogate key of one product's cached responses."""
    return f"catalog-product:{sku}"


class CatalogService:
    """Products for everyone to read, and for signed-in editors to change.

    Knows nothing of HTTP: it tags nothing itself, but tells the purge hook which
    keys a write made stale, so a CDN or Varnish drops them at once.
    """

    def __init__(self, products: ProductRepository, purger: SurrogatePurger) -> None:
        self._products = products
        self._purger = purger

    async def list_products(self, after_sku: str = "", limit: int = MAX_PAGE) -> list[Product]:
        """Return one page of products in sku order, after `after_sku`."""
        return await self._products.select_products(after_sku, max(1, min(limit, MAX_PAGE)))

    async def get_product(self, sku: str) -> Product:
        """Return the product, or raise NotFound (also for a sku that cannot exist)."""
        product = await self._products.select_product(sku) if _SKU.fullmatch(sku) else None
        if product is None:
            raise NotFound()
        return product

    async def put_product(
        self, sku: str, *, name: str, description: str, price_cents: int
    ) -> tuple[Product, bool]:
        """Create or replace a product, then purge the cached copies it made stale.

        Returns the product and whether it was new.
        """
        if not _SKU.fullmatch(sku):
            raise InvalidInput("A sku is 1-64 of A-Z a-z 0-9 _ -.")
        product, created = await self._products.upsert_product(sku, name, description, price_cents)
        await self._purger.purge([PRODUCTS_KEY, product_key(sku)])
        return product, created
