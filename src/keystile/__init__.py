"""keystile: an async authentication service for high-traffic Python web applications.

Comments name security requirements by id (S1..S45, explained with their tests in
docs/security.md) and hot paths by number (docs/architecture.md).

Importing `keystile` (or `keystile.metrics`, `keystile.settings`, any store) does not
import Quart: `create_app` and the other web-facing names load on first use.
Extensions import what they need from `keystile.ext`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keystile.app import create_app
    from keystile.container import Overrides, Services
    from keystile.settings import Settings, load_settings

__all__ = ["Overrides", "Services", "Settings", "create_app", "load_settings"]
__version__ = "0.1.0"

_LAZY = {
    "create_app": "keystile.app",
    "Overrides": "keystile.container",
    "Services": "keystile.container",
    "Settings": "keystile.settings",
    "load_settings": "keystile.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keystile' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
