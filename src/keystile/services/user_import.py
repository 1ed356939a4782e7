"""Bulk import of accounts with existing password hashes (`keystile user import`).

Rows are (email, password_hash), the hash in any format keystile verifies (argon2,
werkzeug pbkdf2/scrypt, bcrypt); legacy ones become argon2id at the user's next
login. Rows are checked first and inserted in batches of one statement each; an
email already present is skipped, so running the same file again changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field

from keystile.repositories.users import UserRepository
from keystile.services.legacy_hashes import describe_problem

__all__ = ["ImportReport", "RefusedRow", "UserImporter"]

_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$")
_MAX_EMAIL = 320
_HEADER = ("email", "password_hash")


@dataclass(frozen=True, slots=True)
class RefusedRow:
    """A row that was not imported, and why (never with its hash)."""

    line: int
    email: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What an import did."""

    imported: int = 0
    already_present: int = 0
    refused: list[RefusedRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UserImporter:
    """Insert accounts from (line number, fields) rows, in batches."""

    users: UserRepository
    _: KW_ONLY
    batch_size: int = 500

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    async def import_rows(
        self,
        rows: Iterable[tuple[int, Sequence[str]]],
        on_progress: Callable[[int], object] = lambda _rows: None,
    ) -> ImportReport:
        """Import the rows; `on_progress(n)` is called after each n rows are done.

        A first row reading `email,password_hash` is taken as a header.
        """
        report = ImportReport()
        seen: dict[str, int] = {}
        batch: list[tuple[str, str]] = []
        pending = 0
        for line, fields in rows:
            pending += 1
            if line == 1 and tuple(part.strip().lower() for part in fields) == _HEADER:
                continue
            refusal = _check(fields, seen, line)
            if refusal is not None:
                report.refused.append(refusal)
            else:
                email, password_hash = fields[0].strip(), fields[1].strip()
                seen[email.lower()] = line
                batch.append((email, password_hash))
            if len(batch) >= self.batch_size:
                await self._flush(batch, report)
                on_progress(pending)
                batch, pending = [], 0
        if batch:
            await self._flush(batch, report)
        if pending:
            on_progress(pending)
        return report

    async def _flush(self, batch: list[tuple[str, str]], report: ImportReport) -> None:
        inserted = len(await self.users.insert_users(batch))
        report.imported += inserted
        report.already_present += len(batch) - inserted


def _check(fields: Sequence[str], seen: dict[str, int], line: int) -> RefusedRow | None:
    if len(fields) != 2:
        email = fields[0].strip() if fields else ""
        return RefusedRow(
            line, email, f"expected 2 columns (email,password_hash), got {len(fields)}"
        )
    email, password_hash = fields[0].strip(), fields[1].strip()
    if len(email) > _MAX_EMAIL or not _EMAIL.match(email):
        return RefusedRow(line, email[:_MAX_EMAIL], "not an email address")
    earlier = seen.get(email.lower())
    if earlier is not None:
        return RefusedRow(line, email, f"same email as line {earlier}")
    problem = describe_problem(password_hash)
    if problem is not None:
        return RefusedRow(line, email, problem)
    return None
