"""What a new password must be: 8..1024 characters after NFKC (S1), and not common (S2)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field
from importlib import resources

from keystile.errors import PasswordPolicyViolation, PasswordTooLong

__all__ = ["CONTROL_CHARACTERS", "PasswordPolicy", "load_common_passwords", "normalise_password"]


# Never in a password (S24), as a regex class body: the API's schemas refuse them by
# pattern (web/schemas.py); the HTML forms have no schema, so the policy refuses them too.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f"
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def normalise_password(password: str) -> str:
    """Return the NFKC form, so the same password typed on any keyboard matches (NIST 800-63B)."""
    return unicodedata.normalize("NFKC", password)


def load_common_passwords() -> list[str]:
    """Return the shipped list of the 30,000 most common passwords, most common first.

    The list, where it comes from and its licence: `keystile/data/NOTICE.md`.
    """
    text = resources.files("keystile").joinpath("data/common-passwords.txt").read_text("utf-8")
    return [line for line in text.splitlines() if line]


def _folded(password: str) -> str:
    # ASCII is already NFKC: the fast path keeps app start-up cheap (30,000 entries).
    if password.isascii():
        return password.lower()
    return normalise_password(password).casefold()


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordPolicy:
    """Check new passwords: length and the common-password list; no composition rules."""

    min_length: int
    max_length: int
    common_passwords: InitVar[Iterable[str]] = ()  # kept folded, as `_common`
    _common: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self, common_passwords: Iterable[str]) -> None:
        object.__setattr__(
            self, "_common", frozenset(_folded(password) for password in common_passwords)
        )

    def check_length(self, password: str) -> str:
        """Return the normalised password or raise `PasswordTooLong`.

        Also used at login: an over-long password is refused before any hash is spent.
        """
        normalised = normalise_password(password)
        if len(normalised) > self.max_length:
            raise PasswordTooLong(f"The password must be at most {self.max_length} characters.")
        return normalised

    def check_new(self, password: str) -> str:
        """Return the normalised new password or raise `PasswordPolicyViolation`.

        The common-password check ignores case: "PassWord1" is as guessable as "password1".
        """
        normalised = self.check_length(password)
        if _CONTROL.search(normalised):
            raise PasswordPolicyViolation("The password must not contain control characters.")
        if len(normalised) < self.min_length:
            raise PasswordPolicyViolation(
                f"The password must be at least {self.min_length} characters."
            )
        if _folded(normalised) in self._common:
            raise PasswordPolicyViolation(
                "This password is one of the most commonly used ones, so it is easy to guess; "
                "choose another."
            )
        return normalised
