"""What a new password must be (S1): long enough, not too long, compared after NFKC."""

from __future__ import annotations

import unicodedata

from keystile.errors import PasswordPolicyViolation

__all__ = ["PasswordPolicy", "normalise_password"]


def normalise_password(password: str) -> str:
    """Return the NFKC form, so the same password typed on any keyboard matches (NIST 800-63B)."""
    return unicodedata.normalize("NFKC", password)


class PasswordPolicy:
    """Check new passwords: length only, no composition rules, no truncation."""

    def __init__(self, *, min_length: int, max_length: int) -> None:
        self.min_length = min_length
        self.max_length = max_length

    def check_length(self, password: str) -> str:
        """Return the normalised password or raise `PasswordPolicyViolation`.

        Also used at login: an over-long password is refused before any hash is spent.
        """
        normalised = normalise_password(password)
        if len(normalised) > self.max_length:
            raise PasswordPolicyViolation(
                f"The password must be at most {self.max_length} characters."
            )
        return normalised

    def check_new(self, password: str) -> str:
        """Return the normalised new password or raise `PasswordPolicyViolation`."""
        normalised = self.check_length(password)
        if len(normalised) < self.min_length:
            raise PasswordPolicyViolation(
                f"The password must be at least {self.min_length} characters."
            )
        return normalised
