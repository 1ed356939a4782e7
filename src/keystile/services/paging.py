"""Keyset cursors of the admin listings: opaque to callers, `(created_at, id)` inside.

A cursor names the last row of a page; the next page starts after it, so rows created
while someone pages are appended at the end and never shift a page.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Protocol, TypeVar
from uuid import UUID

from keystile.errors import InvalidInput

__all__ = ["MAX_PAGE_SIZE", "decode_cursor", "encode_cursor", "split_page"]

MAX_PAGE_SIZE = 100


class _Keyed(Protocol):
    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> UUID: ...


_Row = TypeVar("_Row", bound=_Keyed)


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    """Return the cursor of the page that follows the row `(created_at, row_id)`."""
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Return the `(created_at, id)` a cursor names; raise `InvalidInput` if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, row_id = raw.partition("|")
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor: not a cursor this API returned.") from None


def split_page(rows: list[_Row], limit: int) -> tuple[list[_Row], str | None]:
    """Return the page of `rows` fetched as `limit + 1`, and the next page's cursor (if any)."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(page[-1].created_at, page[-1].id)
