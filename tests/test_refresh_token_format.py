"""The refresh token names its account under a tag only the server can make (S15, S27)."""

from __future__ import annotations

import secrets
import uuid

from keystile.secret_keys import SecretKeys
from keystile.services.refresh_token_format import LEGACY_LENGTH, RefreshTokenFormat
from tests.support.tokens import token_bytes, token_text

SECRET = b"s" * 40


def test_a_first_token_names_its_account_and_is_random() -> None:
    tokens = RefreshTokenFormat(SECRET)
    user_id = uuid.uuid4()
    first, second = tokens.first(user_id), tokens.first(user_id)
    assert first != second
    assert tokens.account_of(first) == tokens.account_of(second) == user_id
    assert len(first) == 87


def test_a_successor_names_the_same_account_and_is_the_same_every_time() -> None:
    # S16's grace window re-derives the successor; S27 charges it to the same account.
    tokens = RefreshTokenFormat(SECRET)
    user_id = uuid.uuid4()
    first = tokens.first(user_id)
    successor = tokens.successor(first, user_id)
    assert successor == tokens.successor(first, user_id) != first
    assert tokens.account_of(successor) == user_id
    assert tokens.successor(successor, user_id) not in {first, successor}


def test_a_token_with_a_changed_byte_names_no_one() -> None:
    # S27: a stranger who writes another account's id into a token spends nothing of it.
    tokens = RefreshTokenFormat(SECRET)
    victim, attacker = uuid.uuid4(), uuid.uuid4()
    genuine = token_bytes(tokens.first(attacker))
    for index in (0, 1, 20, len(genuine) - 1):  # version, account, secret, tag
        changed = bytearray(genuine)
        changed[index] ^= 0x01
        assert tokens.account_of(token_text(changed)) is None
    swapped = bytearray(genuine)
    swapped[1:17] = victim.bytes
    assert tokens.account_of(token_text(swapped)) is None
    assert not tokens.is_older_form(token_text(swapped))


def test_a_token_made_under_another_secret_names_no_one() -> None:
    user_id = uuid.uuid4()
    elsewhere = RefreshTokenFormat(b"t" * 40).first(user_id)
    assert RefreshTokenFormat(SECRET).account_of(elsewhere) is None


def test_spare_bits_in_the_last_character_make_it_another_token() -> None:
    # 65 bytes leave two spare bits in the 87th character: only the canonical text counts.
    tokens = RefreshTokenFormat(SECRET)
    token = tokens.first(uuid.uuid4())
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    variant = token[:-1] + alphabet[last | 0b01]
    assert last & 0b11 == 0
    assert variant != token
    assert tokens.account_of(variant) is None


def test_a_token_from_before_selectors_names_no_one_and_keeps_its_form() -> None:
    # Issued before tokens named their account: still rotatable, charged per address only.
    tokens = RefreshTokenFormat(SECRET)
    legacy = secrets.token_urlsafe(32)
    assert len(legacy) == LEGACY_LENGTH
    assert tokens.account_of(legacy) is None
    assert tokens.is_older_form(legacy)
    successor = tokens.successor(legacy, None)
    assert len(successor) == LEGACY_LENGTH
    assert tokens.account_of(successor) is None


def test_text_of_any_other_length_is_neither_form() -> None:
    tokens = RefreshTokenFormat(SECRET)
    for text in ("", "C" * 42, "C" * 44, "C" * 86, "C" * 87, "C" * 88):
        assert tokens.account_of(text) is None
        assert not tokens.is_older_form(text)


def test_a_token_of_the_previous_secret_key_names_its_account_and_is_succeeded_under_the_new() -> (
    None
):
    # After a rotation (secret_key_fallbacks): the tag is checked under each key; the
    # successor is made under the new one, and the one an old worker made is known too.
    old, new = b"o" * 40, b"n" * 40
    before, rotated = RefreshTokenFormat(old), RefreshTokenFormat(SecretKeys(new, (old,)))
    user_id = uuid.uuid4()
    issued = before.first(user_id)
    selector = rotated.selector(issued)
    assert selector is not None
    assert (selector.account, selector.previous_key) == (user_id, True)
    successor, elsewhere = rotated.successors(issued, user_id)
    assert successor == rotated.successor(issued, user_id)
    assert elsewhere == before.successor(issued, user_id)
    assert RefreshTokenFormat(new).account_of(successor) == user_id
    assert RefreshTokenFormat(new).account_of(issued) is None
    fresh = rotated.selector(rotated.first(user_id))
    assert fresh is not None
    assert not fresh.previous_key
