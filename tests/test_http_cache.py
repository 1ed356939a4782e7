"""The `http_cache` decorator and the app-wide defaults (S20-S23)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from quart import Quart
from werkzeug.datastructures import Headers

from keystile.app import create_app
from keystile.container import Overrides
from keystile.settings import Settings
from keystile.web.auth import requires_session
from keystile.web.caching import CachePolicyError, add_vary, http_cache
from tests.probe_extension import ProbeExtension
from tests.support.http import Client, login, register, unique_email


@pytest.fixture(name="probe_app")
async def _probe_app(settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(settings, overrides=Overrides(), extensions=[ProbeExtension()])
    async with app.test_app() as test_app:
        yield test_app  # type: ignore[misc]


@pytest.fixture(name="probe")
def _probe(probe_app: Quart) -> Client:
    return probe_app.test_client()


async def _signed_in(client: Client) -> str:
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    return email


async def test_public_route_sends_every_cache_header(probe: Client) -> None:
    response = await probe.get("/probe/public")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == (
        "public, max-age=60, s-maxage=120, stale-while-revalidate=10, stale-if-error=600"
    )
    assert response.headers["Vary"] == "Accept-Encoding"
    assert response.headers["Surrogate-Key"] == "probe probe-extra"
    assert response.headers["Last-Modified"] == "Fri, 02 Jan 2026 03:04:05 GMT"
    etag = response.headers["ETag"]
    assert etag.startswith('"')  # strong: no W/ prefix
    assert "Set-Cookie" not in response.headers


async def test_etag_is_stable_and_if_none_match_gets_304_with_headers(probe: Client) -> None:
    first = await probe.get("/probe/public")
    etag = first.headers["ETag"]
    assert (await probe.get("/probe/public")).headers["ETag"] == etag

    conditional = await probe.get("/probe/public", headers={"If-None-Match": etag})
    assert conditional.status_code == 304
    assert await conditional.get_data() == b""
    assert conditional.headers["ETag"] == etag
    assert conditional.headers["Cache-Control"] == first.headers["Cache-Control"]
    assert conditional.headers["Vary"] == "Accept-Encoding"

    weak = await probe.get("/probe/public", headers={"If-None-Match": f"W/{etag}"})
    assert weak.status_code == 304  # If-None-Match uses the weak comparison

    other = await probe.get("/probe/public", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200
    assert await other.get_json() == {"hello": "world"}


async def test_if_modified_since_gets_304(probe: Client) -> None:
    response = await probe.get(
        "/probe/public", headers={"If-Modified-Since": "Fri, 02 Jan 2026 03:04:05 GMT"}
    )
    assert response.status_code == 304
    older = await probe.get(
        "/probe/public", headers={"If-Modified-Since": "Thu, 01 Jan 2026 00:00:00 GMT"}
    )
    assert older.status_code == 200


async def test_head_gets_the_same_validators(probe: Client) -> None:
    get = await probe.get("/probe/public")
    head = await probe.head("/probe/public")
    assert head.status_code == 200
    assert head.headers["ETag"] == get.headers["ETag"]
    assert (
        await probe.head("/probe/public", headers={"If-None-Match": get.headers["ETag"]})
    ).status_code == 304


async def test_handler_supplied_etag_is_used(probe: Client) -> None:
    response = await probe.get("/probe/supplied-etag")
    assert response.headers["ETag"] == '"version-7"'
    again = await probe.get("/probe/supplied-etag", headers={"If-None-Match": '"version-7"'})
    assert again.status_code == 304


async def test_error_responses_of_a_cached_route_stay_no_store(probe: Client) -> None:
    response = await probe.get("/probe/missing")
    assert response.status_code == 404
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers


async def test_uncached_routes_default_to_no_store(probe: Client) -> None:
    # S20: no opt-in, no caching; the auth endpoints included.
    assert (await probe.get("/healthz")).headers["Cache-Control"] == "no-store"
    email = unique_email()
    await register(probe, email)
    response = await login(probe, email)
    assert response.headers["Cache-Control"] == "no-store"


async def test_every_response_has_one_of_each_default_header(probe: Client) -> None:
    # S20/S21: the defaults are added once, beside what the handler and QuartAuth set.
    await _signed_in(probe)
    for path in ("/healthz", "/v1/me", "/probe/cookie-by-hand"):
        headers = (await probe.get(path)).headers
        assert headers.getlist("Cache-Control") == ["no-store"], path
        assert headers.getlist("X-Content-Type-Options") == ["nosniff"], path
    me = (await probe.get("/v1/me")).headers
    assert me.getlist("Vary") == ["Cookie, Authorization"]


async def test_public_response_that_reads_the_session_is_refused(probe: Client) -> None:
    # S21/S22: a public response must not depend on the caller; refusing is a 500, no body.
    response = await probe.get("/probe/public-reads-session")
    assert response.status_code == 500
    assert response.headers["Cache-Control"] == "no-store"
    assert b"signed_in" not in await response.get_data()


async def test_public_response_that_sets_a_cookie_is_refused(probe: Client) -> None:
    # S22: Set-Cookie never on a public response.
    response = await probe.get("/probe/public-sets-cookie")
    assert response.status_code == 500
    assert "tracker" not in response.headers.get("Set-Cookie", "")


async def test_public_response_that_uses_the_quart_session_is_refused(probe: Client) -> None:
    # S22: Quart adds its session cookie after every hook; refuse before that can happen.
    response = await probe.get("/probe/public-uses-quart-session")
    assert response.status_code == 500
    assert response.headers["Cache-Control"] == "no-store"


async def test_hand_set_public_with_a_cookie_becomes_no_store(probe: Client) -> None:
    # S20: whatever the handler said, a response that sets a cookie is no-store.
    response = await probe.get("/probe/cookie-by-hand")
    assert response.headers["Cache-Control"] == "no-store"


async def test_caller_dependent_response_is_never_shared_cacheable(probe: Client) -> None:
    # S21: s-maxage on a response that read the session is downgraded, with Vary.
    await _signed_in(probe)
    response = await probe.get("/probe/shared-by-hand-after-session")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "private, no-store"
    assert {"Cookie", "Authorization"} <= set(response.vary)
    assert "Surrogate-Key" not in response.headers


async def test_private_route_is_private_and_varies_on_credentials(probe: Client) -> None:
    # S21: private, with Vary: Cookie, Authorization.
    email = await _signed_in(probe)
    response = await probe.get("/probe/private")
    assert response.status_code == 200
    assert (await response.get_json())["email"] == email
    assert response.headers["Cache-Control"] == "private, max-age=60"
    assert {"Cookie", "Authorization"} <= set(response.vary)
    assert "Surrogate-Key" not in response.headers


async def test_conditional_request_on_private_url_still_needs_authentication(
    probe_app: Quart, probe: Client
) -> None:
    # S23: a matching If-None-Match without a session is 401, never 304.
    await _signed_in(probe)
    etag = (await probe.get("/probe/private")).headers["ETag"]
    assert (await probe.get("/probe/private", headers={"If-None-Match": etag})).status_code == 304

    stranger = probe_app.test_client()
    refused = await stranger.get("/probe/private", headers={"If-None-Match": etag})
    assert refused.status_code == 401
    assert "ETag" not in refused.headers

    await probe.delete("/v1/sessions/current")
    after_logout = await probe.get("/probe/private", headers={"If-None-Match": etag})
    assert after_logout.status_code == 401


def test_public_cache_on_a_route_requiring_a_session_fails_at_import() -> None:
    # S22: caught at decoration time, whichever decorator is outermost.
    async def handler() -> dict[str, str]:
        return {}

    with pytest.raises(CachePolicyError, match="S22"):
        http_cache(public=True, max_age=60)(requires_session(handler))
    with pytest.raises(CachePolicyError, match="S22"):
        requires_session(http_cache(public=True, max_age=60)(handler))
    # Private caching of an authenticated route is fine.
    http_cache(public=False, max_age=60)(requires_session(handler))


def test_contradictory_policies_fail_at_import() -> None:
    with pytest.raises(CachePolicyError):
        http_cache(public=True, max_age=60, vary=["Cookie"])
    with pytest.raises(ValueError, match="public=True"):
        http_cache(public=False, max_age=60, s_maxage=60)
    with pytest.raises(ValueError, match="public=True"):
        http_cache(public=False, max_age=60, surrogate_keys=["x"])
    with pytest.raises(ValueError, match="surrogate key"):
        http_cache(public=True, max_age=60, surrogate_keys=["has space"])
    with pytest.raises(ValueError, match="negative"):
        http_cache(public=True, max_age=-1)


def test_auth_vary_is_merged_into_an_existing_vary_header() -> None:
    # S21: the credential headers join whatever Vary the handler set, once each.
    fresh = Headers()
    add_vary(fresh, ("Cookie", "Authorization"))
    assert fresh["Vary"] == "Cookie, Authorization"

    existing = Headers({"Vary": "Accept-Encoding, cookie"})
    add_vary(existing, ("Cookie", "Authorization"))
    assert existing["Vary"] == "Accept-Encoding, cookie, Authorization"

    anything = Headers({"Vary": "*"})
    add_vary(anything, ("Cookie", "Authorization"))
    assert anything["Vary"] == "*"
