"""Everything an extension needs, in one import; the rest of keystile is private to it.

    from keystile.ext import Extension, Services, requires_auth, http_cache, services

An extension is an object with a `name`, `blueprints()` and `build(core)` (see
`Extension`); enable it with `create_app(settings, extensions=[...])` or by import
path in settings (`extensions = ["keystile_catalog:CatalogExtension"]`). If it owns
tables, it sets `migrations` to the directory of its alembic revisions, and
`keystile migrate` (and `serve`) runs them, only where the extension is enabled.
`examples/catalog` is a complete one, installable on its own.
"""

from __future__ import annotations

from keystile.container import Services
from keystile.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    KeystileError,
    NotAuthenticated,
    NotFound,
)
from keystile.extensions import Extension
from keystile.repositories.database import Database
from keystile.services.types import ClientInfo, Principal
from keystile.stores.purge import SurrogatePurger
from keystile.web.auth import get_principal, requires_auth, requires_session
from keystile.web.caching import add_surrogate_keys, http_cache, set_etag, set_last_modified
from keystile.web.context import client_info, services

__all__ = [
    "ClientInfo",
    "Conflict",
    "Database",
    "DependencyUnavailable",
    "Extension",
    "Forbidden",
    "InvalidInput",
    "KeystileError",
    "NotAuthenticated",
    "NotFound",
    "Principal",
    "Services",
    "SurrogatePurger",
    "add_surrogate_keys",
    "client_info",
    "get_principal",
    "http_cache",
    "requires_auth",
    "requires_session",
    "services",
    "set_etag",
    "set_last_modified",
]
