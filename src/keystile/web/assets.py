"""Static files under content-hashed names, cached by browsers and CDNs for a year.

`style.css` is served as `/static/style.<16 hex of its SHA-256>.css`: a changed
file gets a new URL, so the old one may be cached forever (`immutable`).
Templates call `asset_url("style.css")`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from quart import Blueprint, Quart, abort, current_app, send_from_directory
from quart.typing import ResponseReturnValue

__all__ = ["STATIC_DIR", "StaticAssets", "blueprint", "init_assets"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_EXTENSION_KEY = "keystile_assets"
# Public, the same for every caller, never changing under one name (S22).
IMMUTABLE = "public, max-age=31536000, immutable"

blueprint = Blueprint("assets", __name__)


class StaticAssets:
    """The fingerprinted names of the files in one directory, computed once at start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._public: dict[str, str] = {}
        self._files: dict[str, str] = {}
        for path in sorted(directory.iterdir()):
            if not path.is_file():
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            public = f"{path.stem}.{digest}{path.suffix}"
            self._public[path.name] = public
            self._files[public] = path.name

    def url(self, name: str) -> str:
        """Return the fingerprinted URL of a static file; KeyError if there is none."""
        return f"/static/{self._public[name]}"

    def file_for(self, public: str) -> str | None:
        """Return the file behind a fingerprinted name, or None."""
        return self._files.get(public)


def init_assets(app: Quart, directory: Path = STATIC_DIR) -> StaticAssets:
    """Fingerprint the static files and give templates `asset_url`."""
    assets = StaticAssets(directory)
    app.extensions[_EXTENSION_KEY] = assets
    app.add_template_global(assets.url, "asset_url")
    app.register_blueprint(blueprint)
    return assets


@blueprint.get("/static/<string:name>")
async def static_file(name: str) -> ResponseReturnValue:
    """Serve a fingerprinted file; any other name is 404 (no unversioned URLs to go stale)."""
    assets: StaticAssets = current_app.extensions[_EXTENSION_KEY]
    file_name = assets.file_for(name)
    if file_name is None:
        abort(404)
    response = await send_from_directory(assets.directory, file_name)
    response.headers["Cache-Control"] = IMMUTABLE
    return response
