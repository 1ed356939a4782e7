"""/docs: Swagger UI for /openapi.json, served entirely by keystile (no CDN, works offline).

The UI's files come from the `swagger-ui-bundle-v2` package and are served as
fingerprinted static assets; the page has no inline script, and its
Content-Security-Policy allows scripts, styles and fetches from this origin only.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, render_template
from quart_schema import hide
from swagger_ui_bundle import swagger_ui_path

__all__ = ["CSP", "SWAGGER_ASSETS", "blueprint"]

blueprint = Blueprint("api_docs", __name__, template_folder="templates")

_SWAGGER_DIR = Path(str(swagger_ui_path))
SWAGGER_ASSETS = {
    "swagger-ui-bundle.js": _SWAGGER_DIR / "swagger-ui-bundle.js",
    "swagger-ui.css": _SWAGGER_DIR / "swagger-ui.css",
}
# The pages' policy plus what Swagger UI needs: its own script, fetching the document
# (and "Try it out") from this origin, and the data: URIs of its icons.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@blueprint.get("/docs")
@hide
async def docs() -> Response:
    """Show the API reference: every operation of /openapi.json, with "Try it out"."""
    response = Response(await render_template("docs.html"))
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "same-origin"
    return response
