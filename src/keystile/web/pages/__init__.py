"""The browser pages: /login, /register, /account, the email pages (server-rendered, no JS)."""

from keystile.web.pages import account, email, entry, mfa, reauth
from keystile.web.pages.common import blueprint

__all__ = ["account", "blueprint", "email", "entry", "mfa", "reauth"]
