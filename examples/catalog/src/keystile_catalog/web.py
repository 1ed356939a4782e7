"""The catalogue's HTTP API: public cacheable reads, an authenticated write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ParamSpec

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from keystile.ext import (
    add_surrogate_keys,
    http_cache,
    requires_session,
    services,
    set_last_modified,
)
from keystile_catalog.repository import Product
from keystile_catalog.service import PRODUCTS_KEY, CatalogService, product_key

__all__ = ["blueprint"]

blueprint = Blueprint("catalog", __name__)

P = ParamSpec("P")


def _public_cache(*surrogate_keys: str) -> Callable[[Callable[P, Awaitable[Any]]], Any]:
    # Browsers keep a copy for a minute; shared caches for five, and purges on every
    # write make that safe. A day of stale-if-error rides out an origin outage.
    return http_cache(
        public=True,
        max_age=60,
        s_maxage=300,
        stale_while_revalidate=30,
        stale_if_error=86400,
        surrogate_keys=surrogate_keys,
    )


class ProductIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    price_cents: int = Field(ge=0, le=1_000_000_000)


class ProductOut(BaseModel):
    sku: str
    name: str
    description: str
    price_cents: int
    updated_at: datetime


class ProductPage(BaseModel):
    products: list[ProductOut]
    next_after: str | None = Field(description="pass as `after` for the next page")


class PageQuery(BaseModel):
    after: str = Field(default="", max_length=64)
    limit: int = Field(default=50, ge=1, le=100)


def _catalog() -> CatalogService:
    return services().extension(CatalogService)


def _out(product: Product) -> ProductOut:
    return ProductOut(
        sku=product.sku,
        name=product.name,
        description=product.description,
        price_cents=product.price_cents,
        updated_at=product.updated_at,
    )


@blueprint.get("/v1/catalog/products")
@_public_cache(PRODUCTS_KEY)
@validate_querystring(PageQuery)
@validate_response(ProductPage)
async def list_products(query_args: PageQuery) -> ProductPage:
    """List products in sku order; cacheable by anyone, purged on any product change."""
    products = await _catalog().list_products(query_args.after, query_args.limit)
    if products:
        set_last_modified(max(product.updated_at for product in products))
    full = len(products) == query_args.limit
    return ProductPage(
        products=[_out(product) for product in products],
        next_after=products[-1].sku if full else None,
    )


@blueprint.get("/v1/catalog/products/<sku>")
@_public_cache()
@validate_response(ProductOut)
async def get_product(sku: str) -> ProductOut:
    """Return one product; cacheable by anyone, purged when it changes."""
    product = await _catalog().get_product(sku)
    add_surrogate_keys(product_key(product.sku))
    set_last_modified(product.updated_at)
    return _out(product)


@blueprint.put("/v1/catalog/products/<sku>")
@requires_session
@validate_request(ProductIn)
@validate_response(ProductOut, 200)
@validate_response(ProductOut, 201)
async def put_product(sku: str, data: ProductIn) -> tuple[ProductOut, int]:
    """Create or replace a product (signed-in users); purges its cached pages."""
    product, created = await _catalog().put_product(
        sku, name=data.name, description=data.description, price_cents=data.price_cents
    )
    return _out(product), 201 if created else 200
