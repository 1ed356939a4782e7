"""A short, human summary of a user agent string ("Firefox 133 on Windows")."""

from __future__ import annotations

from functools import lru_cache

import ua_parser

__all__ = ["describe_user_agent"]

_UNKNOWN = {"", "Other"}


@lru_cache(maxsize=4096)
def describe_user_agent(user_agent: str) -> str:
    """Return "Browser major on OS" for a user agent, or "Unknown device".

    Parsing runs regular expressions (the first call compiles them), so callers
    on the event loop should run it in a thread; results are memoised.
    """
    if not user_agent:
        return "Unknown device"
    result = ua_parser.parse(user_agent)
    browser = result.user_agent
    os = result.os
    name = ""
    if browser is not None and browser.family not in _UNKNOWN:
        name = browser.family if browser.major is None else f"{browser.family} {browser.major}"
    system = "" if os is None or os.family in _UNKNOWN else os.family
    if name and system:
        return f"{name} on {system}"
    return name or system or "Unknown device"
