"""Static files under content-hashed names, cached by browsers and CDNs for a year.

`style.css` is served as `/static/style.<16 hex of its SHA-256>.css`: a changed
file gets a new URL, so the old one may be cached forever (`immutable`).
Templates call `asset_url("style.css")`. Files shipped by other packages (the
Swagger UI of /docs) are served the same way, from keystile itself, so nothing a
page loads comes from another origin.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path

from quart import Blueprint, Quart, abort, current_app, send_file
from quart.typing import ResponseReturnValue
from quart_schema import hide

__all__ = ["STATIC_DIR", "StaticAssets", "blueprint", "init_assets"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_EXTENSION_KEY = "keystile_assets"
# Public, the same for every caller, never changing under one name (S22).
IMMUTABLE = "public, max-age=31536000, immutable"

blueprint = Blueprint("assets", __name__)


@functools.lru_cache(maxsize=64)
def _digest(path: Path, mtime_ns: int, size: int) -> str:
    # Cached: every app made in one process (tests make hundreds) hashes each file once.
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class StaticAssets:
    """The fingerprinted names of the files in one directory (and `extra` files), made at start.

    `extra` maps a public name to a file elsewhere (another package's asset).
    """

    def __init__(self, directory: Path, extra: Mapping[str, Path] | None = None) -> None:
        self.directory = directory
        self._public: dict[str, str] = {}
        self._files: dict[str, Path] = {}
        files = {path.name: path for path in sorted(directory.iterdir()) if path.is_file()}
        files.update(extra or {})
        for name, path in files.items():
            stat = path.stat()
            digest = _digest(path, stat.st_mtime_ns, stat.st_size)
            stem, dot, suffix = name.rpartition(".")
            public = f"{stem}.{digest}{dot}{suffix}" if dot else f"{name}.{digest}"
            self._public[name] = public
            self._files[public] = path

    def url(self, name: str) -> str:
        """Return the fingerprinted URL of a static file; KeyError if there is none."""
        return f"/static/{self._public[name]}"

    def file_for(self, public: str) -> Path | None:
        """Return the file behind a fingerprinted name, or None."""
        return self._files.get(public)


def init_assets(
    app: Quart, directory: Path = STATIC_DIR, extra: Mapping[str, Path] | None = None
) -> StaticAssets:
    """Fingerprint the static files and give templates `asset_url`."""
    assets = StaticAssets(directory, extra)
    app.extensions[_EXTENSION_KEY] = assets
    app.add_template_global(assets.url, "asset_url")
    app.register_blueprint(blueprint)
    return assets


@blueprint.get("/static/<string:name>")
@hide
async def static_file(name: str) -> ResponseReturnValue:
    """Serve a fingerprinted file; any other name is 404 (no unversioned URLs to go stale)."""
    assets: StaticAssets = current_app.extensions[_EXTENSION_KEY]
    path = assets.file_for(name)
    if path is None:
        abort(404)
    response = await send_file(path)
    response.headers["Cache-Control"] = IMMUTABLE
    return response
