"""`create_app`: the Quart application. Nothing is built at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator, Iterable

from quart import Quart, Response
from quart_schema import QuartSchema

from keystile.bootstrap import open_services
from keystile.container import Overrides
from keystile.extensions import Extension, load_extensions
from keystile.secret_keys import read_secret_keys
from keystile.settings import Settings, load_settings
from keystile.web import api_docs, health, pages, wellknown
from keystile.web import metrics as metrics_web
from keystile.web.api import blueprints as api_blueprints
from keystile.web.assets import init_assets
from keystile.web.caching import default_cache_headers
from keystile.web.context import EXTENSION_KEY
from keystile.web.errors import register_error_handlers
from keystile.web.forms import FormRequest
from keystile.web.login_refusal import LoginRefusal
from keystile.web.observe import RequestObserver, note_request
from keystile.web.openapi import quart_schema_options
from keystile.web.quart_session import NoCookieSessionInterface
from keystile.web.rate_limits import rate_limit_headers
from keystile.web.session_cookie import SessionCookieAuth

__all__ = ["create_app", "session_cookie_name"]


def session_cookie_name(settings: Settings) -> str:
    """`__Host-` binds the cookie to this exact origin, over HTTPS only (S8)."""
    return "__Host-keystile_session" if settings.sessions.cookie_secure else "keystile_session"


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
    keys = read_secret_keys(settings)

    app = Quart("keystile", static_folder=None)
    app.request_class = FormRequest
    app.jinja_options = {**app.jinja_options, "trim_blocks": True, "lstrip_blocks": True}
    app.secret_key = keys.current
    # Cookies and CSRF tokens signed under a previous key still verify (quart-auth's name).
    app.config["SECRET_KEY_FALLBACKS"] = list(keys.previous)
    app.session_interface = NoCookieSessionInterface()
    app.config.update(
        MAX_CONTENT_LENGTH=settings.serving.max_body_bytes,
        JSON_SORT_KEYS=False,
        QUART_SCHEMA_CONVERSION_PREFERENCE="pydantic",
    )
    # Registered before QuartAuth's hook, so it runs after it and sees its Set-Cookie.
    app.after_request(_finish_response)
    SessionCookieAuth(
        app,
        cookie_name=session_cookie_name(settings),
        cookie_secure=settings.sessions.cookie_secure,
        cookie_samesite=settings.sessions.cookie_samesite,
        cookie_http_only=True,
        duration=settings.sessions.absolute_lifetime_seconds,
        salt="keystile session",
    )
    QuartSchema(app, **quart_schema_options(session_cookie_name(settings), settings.tokens.scopes))
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
        app.asgi_app, settings.serving.max_header_bytes, login_refusal=LoginRefusal(app)
    )

    @app.while_serving
    async def _lifespan() -> AsyncGenerator[None, None]:
        async with open_services(settings, overrides, loaded) as services:
            app.extensions[EXTENSION_KEY] = services
            # Everything built so far lives as long as the worker: move it out of the
            # collector's way, so full collections do not rescan it on the request path.
            gc.collect()
            gc.freeze()
            yield
            gc.unfreeze()
            del app.extensions[EXTENSION_KEY]

    return app


async def _finish_response(response: Response) -> Response:
    """What keystile adds to every response, as one after-request hook (each hook is a
    coroutine Quart awaits per request)."""
    note_request()
    rate_limit_headers(response)
    if response.status_code in (204, 304):
        # No body, so no Content-Type (Quart would say text/html).
        response.headers.pop("Content-Type", None)
    default_cache_headers(response)
    return response
