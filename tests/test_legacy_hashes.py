"""Hashes from the Flask app verify, become argon2id at login (S4), and import idempotently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from quart import Quart
from werkzeug.security import generate_password_hash

from keystile.services.legacy_hashes import describe_problem, identify
from tests.conftest import MakeApp
from tests.support.backing import Backing
from tests.support.http import PASSWORD, Client, login, register, services_of, unique_email

ROOT = Path(__file__).resolve().parents[1]

# Cheap but real parameters of each legacy format.
LEGACY = {
    "pbkdf2": lambda password: generate_password_hash(password, method="pbkdf2:sha256:1000"),
    "scrypt": lambda password: generate_password_hash(password, method="scrypt:1024:8:1"),
    "bcrypt": lambda password: bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode(),
}


@pytest.mark.parametrize("scheme", sorted(LEGACY))
async def test_legacy_hash_verifies_and_is_replaced_by_argon2id_at_login(
    app: Quart, client: Client, scheme: str
) -> None:
    # S4: legacy hashes upgraded on login.
    users = services_of(app).users
    email = unique_email()
    legacy_hash = LEGACY[scheme](PASSWORD)
    assert identify(legacy_hash) == scheme
    await users.insert_users([(email, legacy_hash)])

    assert (await login(client, email, "not the password at all")).status_code == 401
    stored = await users.select_user_by_email(email)
    assert stored is not None
    assert stored.password_hash == legacy_hash, "a failed login must not touch the hash"

    assert (await login(client, email)).status_code == 201
    upgraded = await users.select_user_by_email(email)
    assert upgraded is not None
    assert upgraded.password_hash.startswith("$argon2id$")
    assert upgraded.password_changed_at == stored.password_changed_at  # same password
    assert (await login(app.test_client(), email)).status_code == 201
    assert (await login(app.test_client(), email, "not the password at all")).status_code == 401


async def test_an_argon2id_hash_is_rehashed_at_login_when_the_parameters_rise(
    make_app: MakeApp,
) -> None:
    # S4: rehash on login when the parameters rise; the same password, so no epoch bump.
    before = await make_app()
    email = unique_email()
    await register(before.test_client(), email)
    stored = await services_of(before).users.select_user_by_email(email)
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$v=19$m=64,t=1,p=1$")

    after = await make_app(argon2_time_cost=2)
    assert (await login(after.test_client(), email)).status_code == 201
    upgraded = await services_of(after).users.select_user_by_email(email)
    assert upgraded is not None
    assert upgraded.password_hash.startswith("$argon2id$v=19$m=64,t=2,p=1$")
    assert upgraded.password_changed_at == stored.password_changed_at
    assert upgraded.token_epoch == stored.token_epoch
    assert (await login(after.test_client(), email)).status_code == 201


def test_bcrypt_hashes_of_long_passwords_verify_as_bcrypt_made_them() -> None:
    # bcrypt only ever saw the first 72 bytes; the bcrypt package now refuses more.
    from keystile.services.legacy_hashes import verify_legacy

    long_password = "x" * 100
    made = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(4)).decode()
    assert verify_legacy(made, long_password)
    assert not verify_legacy(made, "y" * 100)


@pytest.mark.parametrize(
    ("password_hash", "problem"),
    [
        ("md5$abc$def", "unrecognised"),
        ("pbkdf2:sha256:999999999$salt$00ff", "iterations"),
        ("pbkdf2:whirlpool:1000$salt$00ff", "digest"),
        ("scrypt:1048576:64:64$salt$00ff", "scrypt"),
        ("", "unrecognised"),
    ],
)
def test_hashes_keystile_cannot_verify_safely_are_described(
    password_hash: str, problem: str
) -> None:
    reason = describe_problem(password_hash)
    assert reason is not None
    assert problem in reason


def _keystile(backing: Backing, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update(
        KEYSTILE_SETTINGS_FILE=str(ROOT / "settings.toml"),
        KEYSTILE_ARGON2_MEMORY_KIB="64",
        KEYSTILE_ARGON2_TIME_COST="1",
        KEYSTILE_ARGON2_ALLOW_WEAK="true",
        KEYSTILE_DATABASE_URL=backing.database_url,
        KEYSTILE_REDIS_URL=backing.redis_url,
        KEYSTILE_SECRET_KEY="k" * 40,
    )
    return subprocess.run(
        [sys.executable, "-m", "keystile", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


async def test_user_import_reports_refusals_and_is_idempotent(
    backing: Backing, client: Client, tmp_path: Path
) -> None:
    good = {scheme: unique_email() for scheme in LEGACY}
    taken = unique_email()
    await register(client, taken)  # already has an account: skipped, not refused
    hashes = {scheme: LEGACY[scheme](PASSWORD) for scheme in LEGACY}
    lines = [
        "email,password_hash",
        *(f"{email},{hashes[scheme]}" for scheme, email in good.items()),
        f"not-an-email,{LEGACY['pbkdf2'](PASSWORD)}",
        f"{unique_email()},md5$abc$def",
        f"{good['pbkdf2'].upper()},{LEGACY['pbkdf2'](PASSWORD)}",
        f"{unique_email()}",
        "",
        f"{taken},{LEGACY['bcrypt'](PASSWORD)}",
    ]
    csv_file = tmp_path / "users.csv"
    csv_file.write_text("\n".join(lines) + "\n")

    first = _keystile(backing, "user", "import", str(csv_file), "--batch-size", "2")
    assert first.returncode == 1, first.stderr  # some rows were refused
    assert "imported 3, already present 1, refused 4" in first.stdout
    assert "refused line 5 (not-an-email): not an email address" in first.stdout
    assert "refused line 6" in first.stdout
    assert "unrecognised hash format" in first.stdout
    assert "refused line 7" in first.stdout
    assert "same email as line 2" in first.stdout
    assert "refused line 8" in first.stdout
    assert "expected 2 columns" in first.stdout
    for password_hash in hashes.values():
        assert password_hash not in first.stdout + first.stderr, "hashes must not be echoed"

    again = _keystile(backing, "user", "import", str(csv_file), "--quiet")
    assert "imported 0, already present 4, refused 4" in again.stdout, again.stderr

    for email in good.values():
        assert (await login(client, email)).status_code == 201
