"""Form bodies are UTF-8 or refused (S24): the one place every form post is decoded.

Quart reads an urlencoded body leniently: raw bytes that are not UTF-8 make the form
silently empty, and a percent-encoded one (`%FF`) becomes U+FFFD, so a login with a
garbled email answered 401 as if the email were merely wrong. Here either is a 400
`malformed_request`, as invalid UTF-8 in a JSON body is, before any handler sees it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from quart.formparser import FormDataParser, ParserFunc
from quart.wrappers import Body, Request
from werkzeug.datastructures import MultiDict

from keystile.errors import MalformedForm

__all__ = ["FormRequest"]

_URLENCODED = frozenset({"application/x-www-form-urlencoded", "application/x-url-encoded"})


async def _parse_urlencoded_strictly(
    parser: FormDataParser,
    body: Body,
    mimetype: str,
    content_length: int | None,
    options: dict[str, str],
) -> tuple[MultiDict[str, str], MultiDict[str, str]]:
    try:
        form = parse_qsl((await body).decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise MalformedForm() from None
    cls = parser.cls or MultiDict
    return cls(form), cls()


class _StrictFormParser(FormDataParser):
    def get_parse_func(self, mimetype: str, options: dict[str, str]) -> ParserFunc | None:
        if mimetype in _URLENCODED:
            return _parse_urlencoded_strictly
        return super().get_parse_func(mimetype, options)


class FormRequest(Request):
    """Quart's request, with form bodies that must be UTF-8 (raw or percent-encoded)."""

    form_data_parser_class = _StrictFormParser
