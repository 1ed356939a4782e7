"""A public product catalogue: the example of extending keystile.

Enable it with `create_app(settings, extensions=[CatalogExtension()])`, or for
`keystile serve` with `KEYSTILE_EXTENSIONS='["examples.catalog:CatalogExtension"]'`.
"""

from examples.catalog.extension import CatalogExtension
from examples.catalog.repository import PostgresProductRepository, Product
from examples.catalog.service import PRODUCTS_KEY, CatalogService, product_key

__all__ = [
    "PRODUCTS_KEY",
    "CatalogExtension",
    "CatalogService",
    "PostgresProductRepository",
    "Product",
    "product_key",
]
