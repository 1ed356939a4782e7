"""The password policy: length after NFKC (S1) and the shipped common-password list (S2)."""

from __future__ import annotations

import pytest

from keystile.errors import PasswordPolicyViolation
from keystile.services.password_policy import PasswordPolicy, load_common_passwords
from tests.support.http import PASSWORD, Client, login, register, unique_email
from tests.support.tokens import grant


def _fullwidth(text: str) -> str:
    """Return `text` in Unicode fullwidth forms, as some keyboards (IMEs) type it."""
    return "".join(chr(ord(char) + 0xFEE0) for char in text)


@pytest.fixture(name="policy", scope="module")
def _policy() -> PasswordPolicy:
    return PasswordPolicy(min_length=8, max_length=1024, common_passwords=load_common_passwords())


def test_the_shipped_list_holds_at_least_the_top_ten_thousand() -> None:
    # S2
    common = load_common_passwords()
    assert len(common) >= 10_000
    assert {"password", "12345678", "qwertyuiop", "iloveyou"} <= set(common)


@pytest.mark.parametrize(
    "password",
    [
        "password123",
        "PassWord123",  # case does not make it less common
        _fullwidth("password123"),  # the same password after NFKC
        "Trustno1",
        "qwertyuiop",
    ],
)
def test_common_passwords_are_refused_case_insensitively_after_nfkc(
    policy: PasswordPolicy, password: str
) -> None:
    # S1, S2
    with pytest.raises(PasswordPolicyViolation, match="most commonly used"):
        policy.check_new(password)


def test_an_uncommon_password_passes_and_comes_back_normalised(policy: PasswordPolicy) -> None:
    assert (
        policy.check_new(_fullwidth("correct") + " horse battery staple")
        == "correct horse battery staple"
    )


def test_length_is_counted_after_nfkc(policy: PasswordPolicy) -> None:
    # S1: the ligature U+FB03 (one code point) is "ffi" after NFKC.
    assert policy.check_new("\ufb03\ufb03xyz") == "ffiffixyz"
    with pytest.raises(PasswordPolicyViolation, match="at least 8"):
        policy.check_new("abcdefg")
    with pytest.raises(PasswordPolicyViolation, match="at most 1024"):
        policy.check_new("x" * 1025)


async def test_registering_with_a_common_password_is_a_clear_422(client: Client) -> None:
    # S2
    response = await client.post(
        "/v1/users", json={"email": unique_email(), "password": "Baseball1"}
    )
    assert response.status_code == 422
    error = (await response.get_json())["error"]
    assert error["code"] == "weak_password"
    assert "most commonly used" in error["message"]


# The registered PASSWORD as an IME types it: the same password after NFKC.
_PASSWORD_FULLWIDTH = _fullwidth("correct") + " horse battery staple"


async def test_a_password_typed_in_another_unicode_form_logs_in(client: Client) -> None:
    # S1: registration stores, and login checks, the NFKC form; sessions and grant alike.
    assert _PASSWORD_FULLWIDTH != PASSWORD
    for registered, typed in ((PASSWORD, _PASSWORD_FULLWIDTH), (_PASSWORD_FULLWIDTH, PASSWORD)):
        email = unique_email()
        await register(client, email, registered)
        assert (await login(client, email, typed)).status_code == 201
        assert (await grant(client, email, typed)).status_code == 200


async def test_password_change_normalises_the_current_and_the_new_password(
    client: Client,
) -> None:
    # S1: the current password is proved, and the new one stored, after NFKC.
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    response = await client.post(
        "/v1/me/password",
        json={
            "current_password": _PASSWORD_FULLWIDTH,
            "new_password": _fullwidth("another") + " long passphrase",
        },
    )
    assert response.status_code == 204, await response.get_data(as_text=True)
    assert (await login(client, email, "another long passphrase")).status_code == 201


async def test_a_long_password_is_never_truncated(client: Client) -> None:
    # S1: every character counts, well past bcrypt's 72 bytes; only the whole password logs in.
    password = "a long passphrase that goes on " * 4 + "and ends here"
    email = unique_email()
    await register(client, email, password)
    assert (await login(client, email, password[:-1] + "E")).status_code == 401
    assert (await login(client, email, password[:72])).status_code == 401
    assert (await login(client, email, password)).status_code == 201
