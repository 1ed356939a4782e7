"""`create_app`: the Quart application. Nothing is built at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable

from quart import Quart, Response, g
from quart_auth import QuartAuth
from quart_schema import QuartSchema
from werkzeug.datastructures import Headers

from keystile.bootstrap import Overrides, build_services
from keystile.extensions import Extension, load_extensions
from keystile.settings import Settings, SettingsError, load_settings
from keystile.web import api_docs, health, pages, wellknown
from keystile.web import metrics as metrics_web
from keystile.web.api import blueprints as api_blueprints
from keystile.web.assets import init_assets
from keystile.web.context import EXTENSION_KEY
from keystile.web.errors import register_error_handlers
from keystile.web.limits import HeaderLimitMiddleware
from keystile.web.observe import RequestObserver, note_request
from keystile.web.openapi import quart_schema_options
from keystile.web.rate_limits import rate_limit_headers

__all__ = ["create_app", "session_cookie_name"]

_log = logging.getLogger(__name__)

_AUTH_VARY = ("Cookie", "Authorization")
# Directives that let a shared cache store a response (RFC 9111 3.5).
_SHARED_DIRECTIVES = ("public", "s-maxage")


def session_cookie_name(settings: Settings) -> str:
    """`__Host-` binds the cookie to this exact origin, over HTTPS only (S8)."""
    return "__Host-keystile_session" if settings.cookie_secure else "keystile_session"


def create_app(
    settings: Settings | None = None,
    *,
    overrides: Overrides | None = None,
    extensions: Iterable[Extension] = (),
) -> Quart:
    """Return a configured keystile app; its services are built when it starts serving.

    `extensions` are served beside keystile's own routes, after those named in
    `settings.extensions` (see `keystile.extensions`).
    """
    settings = settings or load_settings()
    secret_key = settings.read_secret_key()
    if secret_key is None:
        raise SettingsError("secret_key (KEYSTILE_SECRET_KEY or secret_key_file): required")

    app = Quart("keystile", static_folder=None)
    app.jinja_options = {**app.jinja_options, "trim_blocks": True, "lstrip_blocks": True}
    app.secret_key = secret_key
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        QUART_SCHEMA_CONVERSION_PREFERENCE="pydantic",
    )
    # Registered before QuartAuth's hook, so it runs after it and sees its Set-Cookie.
    app.after_request(_cache_headers)
    app.after_request(_no_type_without_body)
    app.after_request(rate_limit_headers)
    app.after_request(note_request)
    QuartAuth(
        app,
        cookie_name=session_cookie_name(settings),
        cookie_secure=settings.cookie_secure,
        cookie_samesite=settings.cookie_samesite,
        cookie_http_only=True,
        duration=settings.session_absolute_lifetime_seconds,
        salt="keystile session",
    )
    QuartSchema(app, **quart_schema_options(session_cookie_name(settings)))
    register_error_handlers(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(wellknown.blueprint)
    app.register_blueprint(metrics_web.blueprint)
    health.draining_flag(app)
    for blueprint in api_blueprints:
        app.register_blueprint(blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(api_docs.blueprint)
    init_assets(app, extra=api_docs.SWAGGER_ASSETS)
    loaded = load_extensions(settings.extensions, extensions)
    for extension in loaded:
        for blueprint in extension.blueprints():
            app.register_blueprint(blueprint)

    # Outermost: the request id, latency and log line cover even a 431 from the header limit.
    app.asgi_app = RequestObserver(  # type: ignore[method-assign]
        HeaderLimitMiddleware(app.asgi_app, settings.max_header_bytes)
    )

    @app.while_serving
    async def _lifespan() -> AsyncGenerator[None, None]:
        async with build_services(settings, overrides, loaded) as services:
            app.extensions[EXTENSION_KEY] = services
            yield
            del app.extensions[EXTENSION_KEY]

    return app


async def _cache_headers(response: Response) -> Response:
    """Default every response to no-store; mark credential-dependent ones (S20, S21)."""
    headers = response.headers
    auth_dependent = g.get("keystile_auth_dependent", False)
    if auth_dependent:
        _add_vary(headers, _AUTH_VARY)
    if "Set-Cookie" in headers or "Cache-Control" not in headers:
        headers["Cache-Control"] = "no-store"
    elif auth_dependent and _shared_cacheable(headers["Cache-Control"]):
        # A handler bug (http_cache refuses this earlier): never let a shared cache keep it.
        _log.error("caller-dependent response marked shared-cacheable; sent as no-store")
        headers["Cache-Control"] = "private, no-store"
        headers.pop("Surrogate-Key", None)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


async def _no_type_without_body(response: Response) -> Response:
    """A 204 or 304 has no body, so no Content-Type (Quart would say text/html)."""
    if response.status_code in (204, 304):
        response.headers.pop("Content-Type", None)
    return response


def _add_vary(headers: Headers, names: tuple[str, ...]) -> None:
    # Edits the header text directly: werkzeug's `response.vary` re-parses it into a
    # callback-backed set on every access, which costs more than the rest of this hook.
    current = headers.get("Vary")
    if current is None:
        headers["Vary"] = ", ".join(names)
        return
    present = {part.strip().lower() for part in current.split(",")}
    if "*" in present:
        return
    missing = [name for name in names if name.lower() not in present]
    if missing:
        headers["Vary"] = ", ".join([current, *missing])


def _shared_cacheable(cache_control: str) -> bool:
    directives = {part.strip().split("=")[0].lower() for part in cache_control.split(",")}
    if "no-store" in directives:
        return False
    return "private" not in directives or any(d in directives for d in _SHARED_DIRECTIVES)
