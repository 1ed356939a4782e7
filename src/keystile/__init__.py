"""keystile: an async authentication service for high-traffic Python web applications.

Comments name security requirements by id (S1..S45, explained with their tests in
docs/security.md) and hot paths by number (docs/architecture.md).
"""

from keystile.app import create_app
from keystile.bootstrap import Overrides, Services
from keystile.settings import Settings, load_settings

__all__ = ["Overrides", "Services", "Settings", "create_app", "load_settings"]
__version__ = "0.1.0"
