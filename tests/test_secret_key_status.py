"""What still depends on a previous secret key: each API key, client secret, recovery code
and TOTP secret records the key it is under, `keystile secret-keys status` counts them,
and a user whose recovery codes are under a previous key is told to make new ones.

As in tests/test_secret_key_rotation.py, "A" is the key before the rotation and "B" the
one after; "C" is a key the deployment once had and no longer names at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.config import Config
from quart import Quart

from alembic import command
from keystile.app import create_app
from keystile.container import Overrides
from keystile.embedded import EmbeddedPostgres, free_port
from keystile.runtime import migrate
from keystile.secret_keys import KeyUse, SecretKeys, key_id
from keystile.settings import Settings
from tests.machine_support import (
    MachineProbe,
    client_token,
    logged_in_user,
    machine_settings,
    new_key,
)
from tests.support.backing import Backing
from tests.support.http import Client, services_of
from tests.support.tokens import bearer
from tests.support.totp import Clock, code_at, enrolled_user, mfa_token

ROOT = Path(__file__).resolve().parents[1]
CLI_TIMEOUT_S = 60


def _key() -> str:
    return secrets.token_hex(32)


def _id(key: str) -> str:
    return key_id(key.encode())


@asynccontextmanager
async def _serving(
    backing: Backing,
    current: str,
    previous: Sequence[str] = (),
    *,
    clock: Clock | None = None,
    **settings: Any,
) -> AsyncIterator[Quart]:
    """Serve the deployment with `current` as its secret key and `previous` as fallbacks."""
    app = create_app(
        machine_settings(
            backing, secret_key=current, secret_key_fallbacks=list(previous), **settings
        ),
        overrides=Overrides(mfa_clock=clock) if clock else None,
        extensions=[MachineProbe()],
    )
    async with app.test_app():
        yield app


async def _recorded(app: Quart, query: str, *args: Any) -> list[str | None]:
    rows = await services_of(app).database.fetch(query, *args)
    return [row[0] for row in rows]


async def _user_id(app: Quart, email: str) -> uuid.UUID:
    found = await services_of(app).users.select_user_by_email(email)
    assert found is not None
    return found.id


async def _second_step(client: Client, email: str, **factor: str) -> Any:
    answer = await mfa_token(client, email)
    return await client.post("/v1/sessions/mfa", json={"mfa_token": answer["mfa_token"], **factor})


def test_a_key_id_names_its_key_and_reveals_nothing_of_it() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    assert len(key_id(old)) == 16
    assert int(key_id(old), 16) >= 0
    assert key_id(old) == key_id(old) != key_id(new)
    assert key_id(old) not in old.hex()  # not a piece of the key itself
    assert SecretKeys(new, (old,)).ids == (key_id(new), key_id(old))


def test_key_use_sorts_counts_by_current_fallback_unconfigured_and_unrecorded() -> None:
    ids = ("c" * 16, "f" * 16, "e" * 16)
    use = KeyUse.of(ids, {"c" * 16: 3, "e" * 16: 2, "0" * 16: 4, "1" * 16: 1, None: 7})
    assert use == KeyUse(current=3, fallbacks=(0, 2), unconfigured=5, unrecorded=7)
    assert use.total == 17
    assert KeyUse.of(ids[:1], {}) == KeyUse(0, (), 0, 0)


async def test_what_is_made_records_the_secret_key_it_is_made_under(backing: Backing) -> None:
    old, new = _key(), _key()
    clock = Clock()
    # With a fallback set, as during a rotation: all is made under the current key alone.
    async with _serving(backing, new, [old], clock=clock) as app:
        owner, _ = await logged_in_user(app)
        created = await new_key(owner)
        client = await services_of(app).machine.clients.create("made", ["reports"])
        _, email, _, _ = await enrolled_user(app, clock)
        user_id = await _user_id(app, email)
        assert await _recorded(
            app, "SELECT secret_key_id FROM api_keys WHERE id = $1", created["id"]
        ) == [_id(new)]
        assert await _recorded(
            app, "SELECT secret_key_id FROM oauth_clients WHERE id = $1", client.record.id
        ) == [_id(new)]
        assert await _recorded(
            app, "SELECT secret_key_id FROM mfa_totp WHERE user_id = $1", user_id
        ) == [_id(new)]
        assert (
            await _recorded(
                app, "SELECT secret_key_id FROM mfa_recovery_codes WHERE user_id = $1", user_id
            )
            == [_id(new)] * 10
        )


async def test_what_is_digested_or_sealed_again_records_the_new_key(backing: Backing) -> None:
    old, new = _key(), _key()
    clock = Clock()
    async with _serving(backing, old, clock=clock) as before:
        owner, _ = await logged_in_user(before)
        created = await new_key(owner)
        client = await services_of(before).machine.clients.create("used", ["reports"])
        _, email, totp_secret, _ = await enrolled_user(before, clock)
        user_id = await _user_id(before, email)
    async with _serving(backing, new, [old], clock=clock) as rotated:
        http = rotated.test_client()
        assert (await http.get("/v1/me", headers=bearer(created["key"]))).status_code == 200
        granted = await client_token(http, str(client.record.id), client.secret)
        assert granted.status_code == 200, await granted.get_data(as_text=True)
        by_totp = await _second_step(http, email, code=code_at(totp_secret, clock))
        assert by_totp.status_code == 201, await by_totp.get_data(as_text=True)

        async def moved() -> bool:
            # The API key's UPDATE is bookkeeping, like a touch: it may land just after.
            found = await _recorded(
                rotated, "SELECT secret_key_id FROM api_keys WHERE id = $1", created["id"]
            )
            return found == [_id(new)]

        await _eventually(moved)
        assert await _recorded(
            rotated, "SELECT secret_key_id FROM oauth_clients WHERE id = $1", client.record.id
        ) == [_id(new)]
        assert await _recorded(
            rotated, "SELECT secret_key_id FROM mfa_totp WHERE user_id = $1", user_id
        ) == [_id(new)]
        # Recovery codes cannot move: they stay recorded under the old key.
        assert set(
            await _recorded(
                rotated, "SELECT secret_key_id FROM mfa_recovery_codes WHERE user_id = $1", user_id
            )
        ) == {_id(old)}


async def _eventually(check: Any, *, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


async def test_recovery_codes_under_a_previous_key_are_flagged_until_made_again(
    backing: Backing,
) -> None:
    old, new = _key(), _key()
    clock = Clock()
    async with _serving(backing, old, clock=clock) as before:
        owner, _, _, _ = await enrolled_user(before, clock)
        status = await (await owner.get("/v1/me/mfa")).get_json()
        assert status["recovery_codes_outdated"] is False
    async with _serving(backing, new, [old], clock=clock) as rotated:
        browser = rotated.test_client()
        browser.cookie_jar = owner.cookie_jar  # type: ignore[attr-defined]
        status = await (await browser.get("/v1/me/mfa")).get_json()
        assert status == {
            "totp": True,
            "totp_pending": False,
            "passkeys": 0,
            "recovery_codes_left": 10,
            "recovery_codes_outdated": True,
        }
        page = await (await browser.get("/account")).get_data(as_text=True)
        assert 'id="recovery-codes-outdated"' in page
        made = await browser.post("/v1/me/mfa/recovery-codes")
        assert made.status_code == 200, await made.get_data(as_text=True)
        status = await (await browser.get("/v1/me/mfa")).get_json()
        assert status["recovery_codes_outdated"] is False
        assert status["recovery_codes_left"] == 10
        page = await (await browser.get("/account")).get_data(as_text=True)
        assert 'id="recovery-codes-outdated"' not in page


async def test_the_status_document_describes_the_outdated_flag(client: Client) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    answer = document["paths"]["/v1/me/mfa"]["get"]["responses"]["200"]
    schema = answer["content"]["application/json"]["schema"]
    assert "recovery_codes_outdated" in schema["required"]
    assert schema["properties"]["recovery_codes_outdated"]["type"] == "boolean"


def _status(
    database_url: str, redis_url: str, current: str, previous: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update(
        KEYSTILE_SETTINGS_FILE=str(ROOT / "settings.toml"),
        KEYSTILE_DATABASE_URL=database_url,
        KEYSTILE_REDIS_URL=redis_url,
        KEYSTILE_SECRET_KEY=current,
        KEYSTILE_SECRET_KEY_FALLBACKS=json.dumps(list(previous)),
    )
    return subprocess.run(
        [sys.executable, "-m", "keystile", "secret-keys", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def _table(output: str) -> dict[str, list[int]]:
    """Return the status table's rows by name: current, each fallback, unconfigured, none."""
    rows: dict[str, list[int]] = {}
    for line in output.splitlines()[1:]:
        row = re.fullmatch(r"(?P<name>.*?\S)\s+(?P<counts>\d+(?:\s+\d+)*)", line)
        if row is None:  # the notes under the table
            break
        rows[row["name"]] = [int(count) for count in row["counts"].split()]
    return rows


async def test_status_counts_what_is_under_the_current_key_a_fallback_and_no_key(
    backing: Backing, private_postgres: tuple[EmbeddedPostgres, str]
) -> None:
    database_url = private_postgres[1]
    gone, old, new = _key(), _key(), _key()
    clock = Clock()
    async with _serving(backing, gone, clock=clock, database_url=database_url) as earliest:
        owner, _ = await logged_in_user(earliest)
        await new_key(owner)  # under a key no longer configured: already refused
        _, lost_email, _, _ = await enrolled_user(earliest, clock)
    async with _serving(backing, old, clock=clock, database_url=database_url) as before:
        owner, _ = await logged_in_user(before)
        await new_key(owner)
        unrecorded = await new_key(owner)
        revoked = await new_key(owner)
        assert (await owner.delete(f"/v1/me/api-keys/{revoked['id']}")).status_code == 204
        await services_of(before).machine.clients.create("idle", ["reports"])
        unrecorded_client = await services_of(before).machine.clients.create("old", ["reports"])
        _, email, _, codes = await enrolled_user(before, clock)
        _, opened_email, _, _ = await enrolled_user(before, clock)
        used = await _second_step(before.test_client(), email, recovery_code=codes[0])
        assert used.status_code == 201, await used.get_data(as_text=True)
    async with _serving(backing, new, [old], clock=clock, database_url=database_url) as rotated:
        owner, _ = await logged_in_user(rotated)
        await new_key(owner)
        await services_of(rotated).machine.clients.create("new", ["reports"])
        await enrolled_user(rotated, clock)
        lost_id = await _user_id(rotated, lost_email)
        opened_id = await _user_id(rotated, opened_email)
    connection: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        # As if made before keystile recorded the key: HMACs cannot be told, sealed secrets
        # are opened under each key to find theirs.
        await connection.execute(
            "UPDATE api_keys SET secret_key_id = NULL WHERE id = $1", unrecorded["id"]
        )
        await connection.execute(
            "UPDATE oauth_clients SET secret_key_id = NULL WHERE id = $1",
            unrecorded_client.record.id,
        )
        await connection.execute(
            "UPDATE mfa_totp SET secret_key_id = NULL WHERE user_id = ANY($1::uuid[])",
            [lost_id, opened_id],
        )
        await connection.execute(
            "UPDATE mfa_recovery_codes SET secret_key_id = NULL WHERE user_id = $1", lost_id
        )
    finally:
        await connection.close()

    result = await asyncio.to_thread(_status, database_url, backing.redis_url, new, [old])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "current",
        _id(new),
        "fallback",
        _id(old),
        "not",
        "configured",
        "not",
        "recorded",
    ]
    assert _table(result.stdout) == {
        # current, fallback A, not configured (C), not recorded
        "API keys (live)": [1, 1, 1, 1],
        "client secrets": [1, 1, 0, 1],
        "recovery codes (unused)": [10, 19, 0, 10],  # one of A's was used
        "  their users": [1, 2, 0, 1],
        "TOTP secrets": [1, 2, 1, 0],  # opened: one under A, one under no configured key
    }
    assert (
        f"fallback {_id(old)}: still needed by 1 API keys (live), 1 client secrets, "
        "19 recovery codes (unused), 2 TOTP secrets"
    ) in lines
    assert any(line.startswith("not configured: ") for line in lines)
    assert any(line.startswith("not recorded: ") and "cannot be told" in line for line in lines)

    # With nothing left under A (here: the old things gone), the fallback serves nothing.
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("DELETE FROM api_keys")
        await connection.execute("DELETE FROM oauth_clients")
        await connection.execute("DELETE FROM mfa_recovery_codes")
        await connection.execute("DELETE FROM mfa_totp")
    finally:
        await connection.close()
    result = await asyncio.to_thread(_status, database_url, backing.redis_url, new, [old])
    assert result.returncode == 0, result.stderr
    assert (
        f"fallback {_id(old)}: no API key, client secret, recovery code or TOTP secret is under it"
    ) in result.stdout.splitlines()


def test_status_against_a_stopped_database_says_so_in_one_line(backing: Backing) -> None:
    url = f"postgresql://keystile:pw-{uuid.uuid4().hex}@127.0.0.1:{free_port()}/keystile"
    result = _status(url, backing.redis_url, _key(), [])
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("keystile: database_url (KEYSTILE_DATABASE_URL): cannot connect"), line
    assert "pw-" not in line


def test_the_migration_leaves_what_exists_unrecorded_and_checks_new_ids(
    backing: Backing, fresh_database: str
) -> None:
    settings = Settings(database_url=fresh_database, redis_url=backing.redis_url)
    migrate(settings, "0013")
    client_id = uuid.uuid4()

    async def before() -> None:
        connection = await asyncpg.connect(fresh_database)
        try:
            await connection.execute(
                "INSERT INTO oauth_clients (id, name, secret_hmac, scopes) "
                "VALUES ($1, 'old', $2, '{reports}')",
                client_id,
                bytes(32),
            )
        finally:
            await connection.close()

    async def after() -> None:
        connection = await asyncpg.connect(fresh_database)
        try:
            recorded = "SELECT secret_key_id FROM oauth_clients WHERE id = $1"
            assert await connection.fetchval(recorded, client_id) is None
            with pytest.raises(asyncpg.CheckViolationError):
                await connection.execute(
                    "UPDATE oauth_clients SET secret_key_id = 'not a key id' WHERE id = $1",
                    client_id,
                )
            await connection.execute(
                "UPDATE oauth_clients SET secret_key_id = $2 WHERE id = $1",
                client_id,
                _id(_key()),
            )
            for table in ("api_keys", "mfa_recovery_codes", "mfa_totp"):
                column = await connection.fetchval(
                    "SELECT is_nullable FROM information_schema.columns "
                    "WHERE table_name = $1 AND column_name = 'secret_key_id'",
                    table,
                )
                assert column == "YES", table
        finally:
            await connection.close()

    asyncio.run(before())
    migrate(settings)
    asyncio.run(after())
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["database_url"] = fresh_database
    command.downgrade(config, "0013")

    async def downgraded() -> None:
        connection = await asyncpg.connect(fresh_database)
        try:
            columns = await connection.fetchval(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE column_name = 'secret_key_id'"
            )
            assert columns == 0
        finally:
            await connection.close()

    asyncio.run(downgraded())
