"""Signing keys: encrypted at rest, published as JWKS, rotated without downtime (S19, S22)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import jwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from quart import Quart

from keystile.app import create_app
from keystile.errors import Conflict
from keystile.repositories.signing_keys import PostgresSigningKeyRepository
from keystile.services.keys import KeyRing, SecretBox
from keystile.stores.cache import publish
from keystile.tasks import background
from tests.support.backing import Backing, make_settings
from tests.support.http import Client, login, register, services_of, unique_email
from tests.support.tokens import bearer, claims_of, error_code, new_user_tokens

ROOT = Path(__file__).resolve().parents[1]


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def _jwks_kids(client: Client) -> list[str]:
    return [
        key["kid"]
        for key in (await (await client.get("/.well-known/jwks.json")).get_json())["keys"]
    ]


async def _eventually(condition: object, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_jwks_is_public_cacheable_and_revalidates(client: Client) -> None:
    # S22 and hot path 5: public, max-age, s-maxage, stale-while-revalidate, strong ETag.
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == (
        "public, max-age=300, s-maxage=300, stale-while-revalidate=60"
    )
    etag = response.headers["ETag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.vary
    assert "Authorization" not in response.vary
    (key,) = (await response.get_json())["keys"]
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert key["alg"] == "EdDSA"
    assert key["use"] == "sig"
    assert key["kid"]
    assert "d" not in key  # never the private part

    again = await client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["ETag"] == etag
    assert again.headers["Cache-Control"].startswith("public")
    assert await again.get_data() == b""
    changed = await client.get("/.well-known/jwks.json", headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200


async def test_jwks_never_sets_a_cookie_even_for_a_logged_in_caller(client: Client) -> None:
    # S22: the response never depends on, or writes, the caller's credentials.
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    response = await client.get("/.well-known/jwks.json", headers={"Authorization": "Bearer x"})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"].startswith("public")


async def test_openid_configuration_describes_issuer_keys_and_algorithms(client: Client) -> None:
    response = await client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    document = await response.get_json()
    assert document["issuer"] == "http://127.0.0.1:8000"
    assert document["jwks_uri"] == "http://127.0.0.1:8000/.well-known/jwks.json"
    assert document["token_endpoint"] == "http://127.0.0.1:8000/v1/tokens"
    assert document["id_token_signing_alg_values_supported"] == ["EdDSA"]
    assert "ETag" in response.headers
    assert response.headers["Cache-Control"].startswith("public")


async def test_tokens_verify_with_the_published_key(client: Client) -> None:
    # What a relying party does: fetch the JWKS, verify with the key named by kid.
    _, body = await new_user_tokens(client)
    jwks = await (await client.get("/.well-known/jwks.json")).get_json()
    key = jwt.PyJWKSet.from_dict(jwks)[_kid(body["access_token"])]
    claims = jwt.decode(
        body["access_token"],
        key.key,
        algorithms=["EdDSA"],
        audience="keystile",
        issuer="http://127.0.0.1:8000",
    )
    assert claims["scope"] == "account"


async def test_es256_keys_when_configured(backing: Backing) -> None:
    app = create_app(make_settings(backing, token_algorithm="ES256"))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        _, body = await new_user_tokens(client)
        assert jwt.get_unverified_header(body["access_token"])["alg"] == "ES256"
        (key,) = (await (await client.get("/.well-known/jwks.json")).get_json())["keys"]
        assert key["kty"] == "EC"
        assert key["crv"] == "P-256"
        assert key["alg"] == "ES256"
        assert (await client.get("/v1/me", headers=bearer(body["access_token"]))).status_code == 200


async def test_private_keys_are_stored_encrypted(app: Quart, backing: Backing) -> None:
    settings = services_of(app).settings
    kid = services_of(app).key_ring.signing_key().kid
    connection = await asyncpg.connect(backing.database_url)
    try:
        stored = await connection.fetchval(
            "SELECT private_key FROM signing_keys WHERE kid = $1", kid
        )
    finally:
        await connection.close()
    with pytest.raises(ValueError, match="Could not deserialize"):
        serialization.load_der_private_key(stored, None)  # not a key in the clear
    with pytest.raises(InvalidTag):
        SecretBox(secrets.token_bytes(32)).open(stored, kid.encode())
    secret = settings.read_secret_key()
    assert secret is not None
    serialization.load_der_private_key(SecretBox(secret).open(stored, kid.encode()), None)


async def test_rotation_publishes_next_key_and_old_tokens_verify_until_retired(
    backing: Backing,
) -> None:
    # S19: next, current and previous keys are published; a rotation reaches every worker
    # without a restart; tokens of the old key verify until it is retired.
    settings = make_settings(backing, token_epoch_cache_seconds=60)
    first, second = create_app(settings), create_app(settings)
    async with first.test_app() as one, second.test_app() as two:
        for app in (one, two):
            await asyncio.wait_for(services_of(app).caches.ready.wait(), timeout=5)
        client_one, client_two = one.test_client(), two.test_client()
        _, body = await new_user_tokens(client_one)
        old_token = body["access_token"]
        old_kid = _kid(old_token)
        ring = services_of(one).key_ring
        lifetime = timedelta(seconds=settings.tokens.longest_access_token_seconds)

        # Announce the next key an hour ahead: published everywhere, not signing yet.
        pending, _ = await ring.rotate(promote_after=timedelta(hours=1), retire_after=lifetime)
        await _eventually(lambda: _has_kids(client_two, {old_kid, pending.kid}))
        assert _kid((await new_user_tokens(client_two))[1]["access_token"]) == old_kid
        with pytest.raises(Conflict):
            await ring.rotate(promote_after=timedelta(0), retire_after=lifetime)

        # Promote it now (as time would), on the database only: the workers follow.
        await _set_key_times(backing, pending.kid, not_before="now()")
        ring.poke()
        services_of(two).key_ring.poke()
        await _eventually(lambda: _signs_with(client_two, pending.kid))
        assert _kid((await new_user_tokens(client_one))[1]["access_token"]) == pending.kid
        # The old key is "previous": still published, its tokens still verify.
        assert set(await _jwks_kids(client_two)) >= {old_kid, pending.kid}
        assert (await client_two.get("/v1/me", headers=bearer(old_token))).status_code == 200

        # Retire the old key: its tokens stop verifying on every worker, and it leaves the JWKS.
        await _set_key_times(backing, old_kid, retired_at="now()")
        await publish(services_of(one).redis, "signing_keys", "retired")
        await _eventually(lambda: _refused(client_two, old_token))
        assert await error_code(await client_one.get("/v1/me", headers=bearer(old_token))) == (
            "invalid_token"
        )
        assert old_kid not in await _jwks_kids(client_one)


async def test_a_key_stops_verifying_when_its_retirement_passes_without_a_reload(
    app: Quart,
) -> None:
    # S19: the old key verifies until the retirement its rotation scheduled, not until
    # this worker next reloads. A ring of its own secret, so other tests' keys are apart.
    now = [datetime.now(UTC)]

    async def notify() -> None:
        return None

    ring = KeyRing(
        PostgresSigningKeyRepository(services_of(app).database),
        SecretBox(os.urandom(32)),
        algorithm="EdDSA",
        notify=notify,
        clock=lambda: now[0],
    )
    await ring.load()
    now[0] = datetime.now(UTC)  # after the first key's not_before, set by PostgreSQL
    old = ring.signing_key()
    new, retiring = await ring.rotate(
        promote_after=timedelta(0), retire_after=timedelta(minutes=10)
    )
    assert retiring == [old.kid]
    assert ring.verification_key(old.kid) is not None  # "previous": still verifies

    now[0] += timedelta(minutes=11)  # no reload in between
    assert ring.verification_key(old.kid) is None
    assert ring.verification_key(new.kid) is not None
    assert [key["kid"] for key in json.loads(ring.jwks())["keys"]] == [new.kid]


async def test_a_key_reload_that_failed_is_run_again_and_the_keys_are_kept_meanwhile(
    app: Quart, backing: Backing, caplog: pytest.LogCaptureFixture
) -> None:
    # A reload failing with an error that is not PostgreSQL being away (here a row no key
    # parses from) used to end the reloads for the worker's life. Now `background` runs
    # the loop again; the ring keeps its keys meanwhile and does not lose the poke (a
    # rotation by another worker) that asked for the failed reload.
    async def notify() -> None:
        return None

    repository = PostgresSigningKeyRepository(services_of(app).database)
    box = SecretBox(os.urandom(32))  # a secret of its own: other tests' keys stay apart
    ring = KeyRing(repository, box, algorithm="EdDSA", notify=notify)
    elsewhere = KeyRing(repository, box, algorithm="EdDSA", notify=notify)
    await ring.load()
    current = ring.signing_key()
    caplog.set_level(logging.ERROR, logger="keystile.tasks")

    async def failures() -> bool:
        return any(
            getattr(record, "task", None) == "keyring" and record.exc_info
            for record in caplog.records
        )

    async def signs_with_the_new_key() -> bool:
        return ring.signing_key().kid == rotated.kid

    async with background(
        "keyring", lambda: ring.run(3600), restart_delay=0.01, restart_max_delay=0.05
    ):
        rotated, _ = await elsewhere.rotate(
            promote_after=timedelta(0), retire_after=timedelta(minutes=10)
        )
        bad_kid = await _insert_unparsable_key(backing, box.fingerprint)
        try:
            ring.poke()  # as the rotation's message does
            await _eventually(failures, seconds=10)
            assert ring.signing_key() == current  # kept: verification and signing go on
        finally:
            await _delete_key(backing, bad_kid)
        # No second poke: the restarted loop does the reload that failed.
        await _eventually(signs_with_the_new_key, seconds=10)
    assert ring.verification_key(current.kid) is not None


async def _insert_unparsable_key(backing: Backing, fingerprint: bytes) -> str:
    kid = f"unparsable-{secrets.token_hex(8)}"
    connection = await asyncpg.connect(backing.database_url)
    try:
        await connection.execute(
            "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, secret_fingerprint, "
            "not_before) VALUES ($1, 'EdDSA', '{\"kty\": \"OKP\"}', $2, $3, now())",
            kid,
            b"not a sealed key",
            fingerprint,
        )
    finally:
        await connection.close()
    return kid


async def _delete_key(backing: Backing, kid: str) -> None:
    connection = await asyncpg.connect(backing.database_url)
    try:
        await connection.execute("DELETE FROM signing_keys WHERE kid = $1", kid)
    finally:
        await connection.close()


async def _has_kids(client: Client, kids: set[str]) -> bool:
    return kids <= set(await _jwks_kids(client))


async def _signs_with(client: Client, kid: str) -> bool:
    return _kid((await new_user_tokens(client))[1]["access_token"]) == kid


async def _refused(client: Client, token: str) -> bool:
    return (await client.get("/v1/me", headers=bearer(token))).status_code == 401


async def _set_key_times(backing: Backing, kid: str, **columns: str) -> None:
    assignments = ", ".join(f"{name} = {value}" for name, value in columns.items())
    connection = await asyncpg.connect(backing.database_url)
    try:
        await connection.execute(f"UPDATE signing_keys SET {assignments} WHERE kid = $1", kid)  # noqa: S608
    finally:
        await connection.close()


def _cli(backing: Backing, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update(
        KEYSTILE_SETTINGS_FILE=str(ROOT / "settings.toml"),
        KEYSTILE_DATABASE_URL=backing.database_url,
        KEYSTILE_REDIS_URL=backing.redis_url,
        KEYSTILE_SECRET_KEY=secret,
    )
    return subprocess.run(
        [sys.executable, "-m", "keystile", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_keys_rotate_command_schedules_a_rotation_the_server_picks_up(
    backing: Backing,
) -> None:
    secret = secrets.token_hex(32)
    app = create_app(make_settings(backing, secret_key=secret))
    async with app.test_app() as test_app:
        await asyncio.wait_for(services_of(test_app).caches.ready.wait(), timeout=5)
        client = test_app.test_client()
        (current,) = await _jwks_kids(client)

        rotated = await asyncio.to_thread(
            _cli, backing, secret, "keys", "rotate", "--promote-after", "600"
        )
        assert rotated.returncode == 0, rotated.stderr
        assert "promoted at" in rotated.stdout
        assert current in rotated.stdout
        # The running server hears of it without a restart.
        await _eventually(lambda: _count_kids(client, 2))

        again = await asyncio.to_thread(_cli, backing, secret, "keys", "rotate")
        assert again.returncode == 2
        assert "already pending" in again.stderr

        listed = await asyncio.to_thread(_cli, backing, secret, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        states = dict(line.split("\t")[:2] for line in listed.stdout.strip().splitlines())
        assert states[current] == "current"
        assert sorted(states.values()) == ["current", "next"]
        _, body = await new_user_tokens(client)
        assert claims_of(body["access_token"])
        assert _kid(body["access_token"]) == current


async def _count_kids(client: Client, count: int) -> bool:
    return len(await _jwks_kids(client)) == count
