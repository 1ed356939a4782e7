"""A public product catalogue: the example of extending keystile.

An installable package of its own (`pip install -e examples/catalog`; `make install`
does it) that uses only `keystile.ext`. Enable it with
`create_app(settings, extensions=[CatalogExtension()])`, or for `keystile serve` with
`KEYSTILE_EXTENSIONS='["keystile_catalog:CatalogExtension"]'`; its table comes from its
own migration (`migrations/`), which `keystile migrate` runs only where it is enabled.
"""

from keystile_catalog.extension import CatalogExtension
from keystile_catalog.repository import PostgresProductRepository, Product
from keystile_catalog.service import PRODUCTS_KEY, CatalogService, product_key

__all__ = [
    "PRODUCTS_KEY",
    "CatalogExtension",
    "CatalogService",
    "PostgresProductRepository",
    "Product",
    "product_key",
]
