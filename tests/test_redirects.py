"""Redirects after login go only to same-site relative paths (S12)."""

from __future__ import annotations

import pytest

from keystile.web.redirects import safe_next

OFF_SITE = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/account",
    "http:evil.example",
    "javascript:alert(1)",
    "evil.example",
    " //evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/%2f%2fevil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "/%252F%252Fevil.example",  # encoded twice
    "/%25252F%25252Fevil.example",  # three times
    "/%09/evil.example",
    "/%0D%0A/evil.example",
    "/account\r\nSet-Cookie: a=b",  # urlsplit drops CR/LF; the raw value would go in Location
    "/account\nLocation: //evil.example",
    "/" + "a" * 3000,
]


@pytest.mark.parametrize("target", OFF_SITE)
def test_off_site_and_encoded_targets_are_refused(target: str) -> None:
    # S12: //x, /\x, absolute URLs and their encoded variants fall back to the default.
    assert safe_next(target) == "/account"


@pytest.mark.parametrize(
    "target", ["/account", "/account?tab=sessions", "/docs#top", "/a/b%20c", "/x?next=/y"]
)
def test_same_site_paths_are_kept(target: str) -> None:
    assert safe_next(target) == target


def test_missing_target_gives_the_default() -> None:
    assert safe_next(None) == "/account"
    assert safe_next("", default="/elsewhere") == "/elsewhere"
