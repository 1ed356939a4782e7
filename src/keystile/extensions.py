"""Extensions: a developer's own package (routes + services) plugged into keystile.

An extension imports only `keystile.ext`. It contributes blueprints, and builds its
services from the core ones (the shared `Database`, Redis, the purge hook, settings)
when a worker starts:

    class CatalogExtension:
        name = "catalog"
        migrations = Path(__file__).parent / "migrations"  # optional: its own tables

        def blueprints(self) -> Sequence[Blueprint]:
            return (catalog_blueprint,)

        @asynccontextmanager
        async def build(self, core: Services) -> AsyncIterator[CatalogService]:
            yield CatalogService(PostgresProductRepository(core.database), core.purger)

Register one with `create_app(settings, extensions=[CatalogExtension()])`, or by
import path in settings (`extensions = ["keystile_catalog:CatalogExtension"]`) so
that `keystile serve` loads it in every worker and `keystile migrate` runs its
migrations. Handlers reach what `build` yielded with
`services().extension(CatalogService)`. See `examples/catalog/`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from quart import Blueprint

from keystile.container import ServiceProvider
from keystile.settings import SettingsError

__all__ = ["Extension", "load_extensions"]


@runtime_checkable
class Extension(ServiceProvider, Protocol):
    """A package of routes and services that keystile serves beside its own.

    Optionally it has a `migrations` attribute: the directory of its alembic
    revisions, run by `keystile migrate` with their own version table.
    """

    @property
    def name(self) -> str:
        """A short unique name, used in error messages."""
        ...

    def blueprints(self) -> Sequence[Blueprint]:
        """Return the blueprints to register on the app."""
        ...


def _load(path: str) -> Extension:
    module_name, _, attribute = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"extensions: cannot import {path!r} ({exc})") from None
    extension = factory()
    if not isinstance(extension, Extension):
        raise SettingsError(f"extensions: {path!r} did not make an Extension")
    return extension


def load_extensions(paths: Iterable[str], explicit: Iterable[Extension] = ()) -> list[Extension]:
    """Return the extensions named in settings (each called with no arguments), then `explicit`.

    Two extensions with the same name are refused: one would silently shadow the other.
    """
    extensions = [_load(path) for path in paths] + list(explicit)
    names = [extension.name for extension in extensions]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SettingsError(f"extensions: registered twice: {', '.join(duplicates)}")
    return extensions
