"""The browser pages: /login, /register, /account (server-rendered, no JavaScript)."""

from keystile.web.pages import account, entry
from keystile.web.pages.common import blueprint

__all__ = ["account", "blueprint", "entry"]
