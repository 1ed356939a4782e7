"""keystile: an async authentication service for high-traffic Python web applications."""

from keystile.app import create_app
from keystile.bootstrap import Overrides, Services
from keystile.settings import Settings, load_settings

__all__ = ["Overrides", "Services", "Settings", "create_app", "load_settings"]
__version__ = "0.1.0"
