"""Access-token verification refuses every token it did not issue as it is (S13, S14, S15)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from jwt.algorithms import OKPAlgorithm
from quart import Quart

from keystile.errors import InvalidToken
from keystile.services.access_tokens import AccessTokenCodec
from tests.support.http import Client, services_of
from tests.support.tokens import bearer, claims_of, error_code, forge, new_user_tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _segments(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())


async def _refused_with(client: Client, token: str, code: str = "invalid_token") -> None:
    response = await client.get("/v1/me", headers=bearer(token))
    assert await error_code(response) == code
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def _valid_token(client: Client) -> str:
    _, body = await new_user_tokens(client)
    return str(body["access_token"])


@pytest.fixture(name="user_id")
async def _user_id(client: Client) -> str:
    """A registered user's id: a token forged for it fails only for what a test changed.

    A forged token for a random `sub` is refused anyway (no such user), so a test of
    one check must name a real user or it proves nothing.
    """
    return str(claims_of(await _valid_token(client))["sub"])


async def test_a_token_forged_with_our_key_for_a_real_user_is_accepted(
    app: Quart, client: Client, user_id: str
) -> None:
    # The baseline of every refusal below: unchanged, the forgery verifies.
    response = await client.get("/v1/me", headers=bearer(forge(app, sub=user_id)))
    assert response.status_code == 200, await response.get_data(as_text=True)


async def test_expired_token_is_refused_as_expired(app: Quart, client: Client) -> None:
    # S14: exp checked (past the leeway of 30 s).
    now = int(time.time())
    await _refused_with(
        client, forge(app, iat=now - 1000, nbf=now - 1000, exp=now - 60), "token_expired"
    )


def _codec(app: Quart) -> AccessTokenCodec:
    """The app's own access-token codec, built from its public parts."""
    services = services_of(app)
    tokens = services.settings.tokens
    return AccessTokenCodec(
        services.key_ring,
        issuer=tokens.issuer,
        audience=tokens.audience,
        ttl=tokens.access_ttl_seconds,
        leeway=tokens.leeway_seconds,
    )


async def test_token_within_the_leeway_still_verifies(app: Quart) -> None:
    # S14: small clock skew is tolerated, in both directions.
    now = int(time.time())
    codec_token = forge(app, exp=now - 5, nbf=now + 5, iat=now + 5)
    # The user does not exist, so the request fails later; verification itself passes.
    _codec(app).verify(codec_token)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"iat": int(time.time()) + 3600}, "issued in the future"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"aud": ["keystile", "someone-else"]}, "audience list (strict)"),
        ({"jti": None}, "missing jti"),
        ({"exp": None}, "missing exp"),
        ({"epoch": None}, "missing epoch"),
        ({"epoch": True}, "epoch not an int"),
        ({"epoch": "0"}, "epoch a string"),
        ({"sub": "not-a-uuid"}, "sub not a user id"),
        ({"scope": ["account"]}, "scope not a string"),
        ({"iss": None}, "missing iss"),
        ({"aud": None}, "missing aud"),
        ({"sub": None}, "missing sub"),
        ({"iat": None}, "missing iat"),
        ({"nbf": None}, "missing nbf"),
        ({"scope": None}, "missing scope"),
    ],
)
async def test_token_with_bad_claims_is_refused(
    app: Quart, client: Client, user_id: str, claims: dict[str, Any], reason: str
) -> None:
    # S14: iss, aud, iat, nbf checked; every claim we rely on is required.
    await _refused_with(client, forge(app, **{"sub": user_id, **claims}))


async def test_alg_none_is_refused(app: Quart, client: Client) -> None:
    # S13: the claims of a real, current token, unsigned.
    kid = services_of(app).key_ring.signing_key().kid
    claims = claims_of(await _valid_token(client))
    token = _segments({"alg": "none", "typ": "at+jwt", "kid": kid}, claims) + "."
    await _refused_with(client, token)


async def test_hs256_signed_with_the_public_key_is_refused(app: Quart, client: Client) -> None:
    # S13: algorithm confusion, trying every form of the public key as the HMAC secret.
    good = await _valid_token(client)
    payload = jwt.decode(good, options={"verify_signature": False})
    key = services_of(app).key_ring.signing_key()
    public = key.public_key
    secrets_to_try = [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        json.dumps(key.public_jwk).encode(),
    ]
    for secret in secrets_to_try:
        signing_input = _segments({"alg": "HS256", "typ": "at+jwt", "kid": key.kid}, payload)
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await _refused_with(client, signing_input + "." + _b64(signature))


async def test_unknown_kid_is_refused(app: Quart, client: Client, user_id: str) -> None:
    # S13: kid is a lookup in the ring, never a path.
    await _refused_with(client, forge(app, sub=user_id, header={"kid": "no-such-key"}))
    await _refused_with(client, forge(app, sub=user_id, header={"kid": "../../../../etc/passwd"}))
    # PyJWT will not even encode a non-string kid; sign one by hand.
    claims = claims_of(forge(app, sub=user_id))
    await _refused_with(client, _hand_signed(app, {"kid": 42}, claims))


def _hand_signed(app: Quart, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Sign with our key whatever header PyJWT's encoder would refuse or rewrite."""
    key = services_of(app).key_ring.signing_key()
    signing_input = _segments({"alg": key.alg, "typ": "at+jwt", "kid": key.kid, **header}, claims)
    signature = key.private_key.sign(signing_input.encode())  # type: ignore[union-attr,call-arg]
    return signing_input + "." + _b64(signature)


async def test_embedded_attacker_key_headers_are_ignored(client: Client) -> None:
    # S13: jwk / jku / x5u in the header never choose the verification key.
    attacker = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    now = int(time.time())
    payload = {
        "iss": "http://127.0.0.1:8000",
        "aud": "keystile",
        "sub": "x",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j",
        "scope": "account",
        "epoch": 0,
    }
    for header in (
        {"jwk": jwk, "typ": "at+jwt"},
        {"jku": "https://evil.example/jwks.json", "kid": "evil", "typ": "at+jwt"},
        {"x5u": "https://evil.example/cert.pem", "kid": "evil", "typ": "at+jwt"},
    ):
        token = jwt.encode(payload, attacker, algorithm="EdDSA", headers=header)
        await _refused_with(client, token)


async def test_our_kid_with_an_attacker_signature_is_refused(app: Quart, client: Client) -> None:
    kid = services_of(app).key_ring.signing_key().kid
    attacker = Ed25519PrivateKey.generate()
    token = jwt.encode(
        {"sub": "x"}, attacker, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"}
    )
    await _refused_with(client, token)


async def test_crit_header_is_refused(app: Quart, client: Client, user_id: str) -> None:
    # S13: we implement no JWS extension, so any `crit` is unknown to us.
    await _refused_with(client, forge(app, sub=user_id, header={"crit": ["exp"]}))
    # PyJWT itself accepts a `crit` it knows (b64 with the standard b64: true); its
    # encoder strips that b64, so sign by hand.
    claims = claims_of(forge(app, sub=user_id))
    await _refused_with(client, _hand_signed(app, {"crit": ["b64"], "b64": True}, claims))


async def test_a_jwt_of_another_type_is_refused(app: Quart, client: Client, user_id: str) -> None:
    # S15: only `typ: at+jwt` passes as an access token.
    await _refused_with(client, forge(app, sub=user_id, header={"typ": "JWT"}))
    await _refused_with(client, forge(app, sub=user_id, header={"typ": None}))


async def test_tampered_payload_is_refused(client: Client) -> None:
    good = await _valid_token(client)
    header, payload, signature = good.split(".")
    claims = json.loads(_unb64(payload))
    claims["scope"] = "account admin"
    tampered = header + "." + _b64(json.dumps(claims).encode()) + "." + signature
    await _refused_with(client, tampered)


async def test_refresh_token_is_not_an_access_token(client: Client) -> None:
    # S15: refresh tokens are opaque and never pass as bearer tokens, and vice versa.
    _, body = await new_user_tokens(client)
    await _refused_with(client, body["refresh_token"])
    swapped = await client.post("/v1/tokens/refresh", json={"refresh_token": body["access_token"]})
    assert swapped.status_code in {401, 422}
    assert (await swapped.get_json())["error"]["code"] in {
        "invalid_refresh_token",
        "validation_failed",
    }


async def test_malformed_authorization_headers_are_refused(client: Client) -> None:
    for value in ("Bearer", "Bearer ", "Bearer a.b", "Bearer ...", "Bearer \u00e9"):
        response = await client.get("/v1/me", headers={"Authorization": value})
        assert response.status_code == 401
        assert (await response.get_json())["error"]["code"] in {
            "invalid_token",
            "not_authenticated",
        }


# --- generated mutations ---------------------------------------------------------

_MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.characters(codec="ascii")),
    st.tuples(st.just("drop"), st.integers(min_value=0), st.just("")),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.characters(codec="ascii")),
    st.tuples(
        st.just("claim"),
        st.sampled_from(["sub", "exp", "iss", "aud", "epoch", "scope", "nbf", "iat", "jti"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=20), st.booleans()),
    ),
)


def _mutate(token: str, mutation: tuple[str, Any, Any]) -> str:
    kind, where, what = mutation
    if kind == "claim":
        header, payload, signature = token.split(".")
        claims = json.loads(_unb64(payload))
        claims[where] = what
        return header + "." + _b64(json.dumps(claims).encode()) + "." + signature
    index = where % (len(token) + (kind == "insert"))
    if kind == "flip":
        return token[:index] + what + token[index + 1 :]
    if kind == "drop":
        return token[:index] + token[index + 1 :]
    return token[:index] + what + token[index:]


def _same_bytes(left: str, right: str) -> bool:
    """Two tokens are the same token if every segment decodes to the same bytes."""
    try:
        return [_unb64(part) for part in left.split(".")] == [
            _unb64(part) for part in right.split(".")
        ]
    except ValueError:
        return False


async def test_generated_mutations_of_a_token_are_refused(app: Quart, client: Client) -> None:
    # S13-S15: whatever changes a byte of the token, it no longer verifies.
    good = await _valid_token(client)
    codec = _codec(app)
    codec.verify(good)

    @hypothesis_settings(
        max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(mutation=_MUTATIONS)
    def mutated_token_is_refused(mutation: tuple[str, Any, Any]) -> None:
        mutated = _mutate(good, mutation)
        if _same_bytes(mutated, good):
            return  # e.g. a flip inside base64 padding bits: the very same token
        with pytest.raises(InvalidToken):
            codec.verify(mutated)

    mutated_token_is_refused()
    # And over HTTP, one of each kind, with the stable code.
    for mutation in (("flip", 10, "x"), ("drop", len(good) - 1, ""), ("claim", "sub", "x")):
        response = await client.get("/v1/me", headers=bearer(_mutate(good, mutation)))
        assert await error_code(response) == "invalid_token"
