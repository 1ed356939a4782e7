"""The example extension (examples/catalog, package keystile_catalog): cacheable reads,
authenticated writes, purges."""

from __future__ import annotations

import uuid
from collections.abc import Collection

import pytest
from keystile_catalog import PRODUCTS_KEY, CatalogExtension, CatalogService, product_key
from quart import Quart

from keystile.app import create_app
from keystile.container import Overrides
from keystile.settings import SettingsError
from keystile.web.context import services
from tests.conftest import MakeApp
from tests.support.backing import CATALOG, Backing, make_settings
from tests.support.http import Client, login, register, unique_email


class RecordingPurger:
    """Remembers the keys each write purged."""

    def __init__(self) -> None:
        self.purged: list[set[str]] = []

    async def purge(self, keys: Collection[str]) -> None:
        self.purged.append(set(keys))


@pytest.fixture(name="purger")
def _purger() -> RecordingPurger:
    return RecordingPurger()


@pytest.fixture(name="catalog_app")
async def _catalog_app(make_app: MakeApp, purger: RecordingPurger) -> Quart:
    return await make_app(overrides=Overrides(purger=purger), extra_extensions=[CatalogExtension()])


@pytest.fixture(name="catalog")
def _catalog(catalog_app: Quart) -> Client:
    return catalog_app.test_client()


def _sku() -> str:
    return f"sku-{uuid.uuid4().hex[:16]}"


_WIDGET = {"name": "Widget", "description": "A fine widget", "price_cents": 1999}


async def _sign_in(client: Client) -> None:
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201


async def test_signed_in_user_creates_then_replaces_a_product(catalog: Client) -> None:
    await _sign_in(catalog)
    sku = _sku()
    created = await catalog.put(f"/v1/catalog/products/{sku}", json=_WIDGET)
    assert created.status_code == 201, await created.get_data()
    assert (await created.get_json())["price_cents"] == 1999
    assert created.headers["Cache-Control"] == "no-store"

    replaced = await catalog.put(
        f"/v1/catalog/products/{sku}", json={**_WIDGET, "price_cents": 2500}
    )
    assert replaced.status_code == 200
    detail = await catalog.get(f"/v1/catalog/products/{sku}")
    assert (await detail.get_json())["price_cents"] == 2500


async def test_write_purges_the_list_and_the_product(
    catalog: Client, purger: RecordingPurger
) -> None:
    await _sign_in(catalog)
    sku = _sku()
    assert (await catalog.put(f"/v1/catalog/products/{sku}", json=_WIDGET)).status_code == 201
    assert purger.purged == [{PRODUCTS_KEY, product_key(sku)}]


async def test_anonymous_write_is_refused(catalog: Client, purger: RecordingPurger) -> None:
    response = await catalog.put(f"/v1/catalog/products/{_sku()}", json=_WIDGET)
    assert response.status_code == 401
    assert purger.purged == []


async def test_cross_site_write_is_refused(catalog: Client) -> None:
    # S11 applies to extension routes through requires_session.
    await _sign_in(catalog)
    response = await catalog.put(
        f"/v1/catalog/products/{_sku()}", json=_WIDGET, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 403


async def test_invalid_product_is_rejected_with_field_errors(catalog: Client) -> None:
    await _sign_in(catalog)
    response = await catalog.put(
        f"/v1/catalog/products/{_sku()}", json={"name": "", "price_cents": -1}
    )
    assert response.status_code == 422
    bad_sku = await catalog.put("/v1/catalog/products/no%20spaces", json=_WIDGET)
    assert bad_sku.status_code == 422


async def test_product_detail_is_publicly_cacheable_and_tagged(catalog: Client) -> None:
    # S22: public, no cookie, even when the reader is signed in.
    await _sign_in(catalog)
    sku = _sku()
    await catalog.put(f"/v1/catalog/products/{sku}", json=_WIDGET)

    response = await catalog.get(f"/v1/catalog/products/{sku}")
    assert response.status_code == 200
    assert response.headers["Cache-Control"].startswith("public, max-age=60, s-maxage=300")
    assert response.headers["Surrogate-Key"] == product_key(sku)
    assert "Last-Modified" in response.headers
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.vary
    again = await catalog.get(
        f"/v1/catalog/products/{sku}", headers={"If-None-Match": response.headers["ETag"]}
    )
    assert again.status_code == 304


async def test_list_pages_in_sku_order_and_is_tagged(catalog: Client) -> None:
    await _sign_in(catalog)
    prefix = f"sku-{uuid.uuid4().hex[:8]}"
    for suffix in ("a", "b", "c"):
        await catalog.put(f"/v1/catalog/products/{prefix}-{suffix}", json=_WIDGET)

    page = await catalog.get(f"/v1/catalog/products?after={prefix}&limit=2")
    assert page.status_code == 200
    body = await page.get_json()
    assert [p["sku"] for p in body["products"]] == [f"{prefix}-a", f"{prefix}-b"]
    assert body["next_after"] == f"{prefix}-b"
    assert page.headers["Surrogate-Key"] == PRODUCTS_KEY
    assert page.headers["Cache-Control"].startswith("public")


async def test_unknown_product_is_404_and_not_cached(catalog: Client) -> None:
    response = await catalog.get(f"/v1/catalog/products/{_sku()}")
    assert response.status_code == 404
    assert response.headers["Cache-Control"] == "no-store"


async def test_services_are_reached_by_type(catalog_app: Quart) -> None:
    async with catalog_app.app.app_context():  # type: ignore[attr-defined]
        assert isinstance(services().extension(CatalogService), CatalogService)
        with pytest.raises(LookupError):
            services().extension(RecordingPurger)


async def test_extension_loads_by_import_path_from_settings(make_app: MakeApp) -> None:
    app = await make_app(extensions=[CATALOG])
    response = await app.test_client().get("/v1/catalog/products?limit=1")
    assert response.status_code == 200


def test_bad_extension_settings_are_refused(backing: Backing) -> None:
    with pytest.raises(SettingsError, match="cannot import"):
        create_app(make_settings(backing, extensions=["keystile_nowhere:Nothing"]))
    with pytest.raises(SettingsError, match="registered twice"):
        create_app(
            make_settings(backing, extensions=["keystile_catalog:CatalogExtension"]),
            extensions=[CatalogExtension()],
        )
