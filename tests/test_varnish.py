"""A real Varnish, with the shipped VCL, in front of a real `keystile serve` (S21, S22).

The origin loads the catalogue example and the probe extension by import path and
counts, in Redis, every request it answers; Varnish runs from
deploy/varnish/keystile.vcl with only the backend port changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar, TextIO

import httpx
import pytest
import redis
from keystile_catalog import PRODUCTS_KEY

from keystile.embedded import free_port
from tests.probe_extension import origin_hits_key
from tests.support.backing import Backing
from tests.support.binaries import binary_path, requires_binary
from tests.support.http import PASSWORD, unique_email
from tests.support.processes import ROOT, Server, start_server, wait_until_ready

VARNISHD = binary_path("varnishd") or "varnishd"

pytestmark = [
    pytest.mark.slow,
    requires_binary("varnishd", package="varnish"),
]


@dataclass
class Edge:
    """Varnish at `varnish`, keystile at `origin`, and the origin's hit counter."""

    varnish: str
    origin: str
    redis: redis.Redis

    def origin_hits(self, method: str, path: str, status: int = 200) -> int:
        return int(self.redis.get(origin_hits_key(method, path, status)) or 0)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.varnish, timeout=10)


def _start_varnish(tmp: Path, port: int, origin_port: int) -> subprocess.Popen[str]:
    shipped = (ROOT / "deploy" / "varnish" / "keystile.vcl").read_text()
    vcl = shipped.replace('.port = "8000";', f'.port = "{origin_port}";')
    assert vcl != shipped, "the shipped VCL no longer names port 8000"
    (tmp / "keystile.vcl").write_text(vcl)
    jail = ["-j", "none"] if os.geteuid() == 0 else []  # root in CI: no privilege-dropping jail
    with (tmp / "varnish.log").open("w") as log:
        return _popen_varnish(tmp, port, jail, log)


def _popen_varnish(tmp: Path, port: int, jail: list[str], log: TextIO) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            VARNISHD,
            "-F",
            *("-n", str(tmp / "varnish")),
            *("-a", f"127.0.0.1:{port}"),
            *("-T", "none"),
            *("-f", str(tmp / "keystile.vcl")),
            *("-s", "malloc,32m"),
            *jail,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args!r} exited: {log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200: {log.read_text()}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class EdgeProcesses:
    edge: Edge
    origin: Server


@contextmanager
def _running_edge(backing: Backing, tmp: Path) -> Iterator[EdgeProcesses]:
    varnish_port = free_port()
    origin = start_server(
        backing,
        tmp,
        workers=1,
        trusted_proxy_hops="1",
        extensions=json.dumps(
            ["keystile_catalog:CatalogExtension", "tests.probe_extension:ProbeExtension"]
        ),
        purge_urls=json.dumps([f"http://127.0.0.1:{varnish_port}/"]),
    )
    origin_url = origin.base
    varnish = None
    try:
        wait_until_ready(origin)
        varnish = _start_varnish(tmp, varnish_port, origin.port)
        varnish_url = f"http://127.0.0.1:{varnish_port}"
        _wait_for(f"{varnish_url}/readyz", varnish, tmp / "varnish.log")
        with redis.Redis.from_url(backing.redis_url) as counter:
            yield EdgeProcesses(Edge(varnish_url, origin_url, counter), origin)
    finally:
        if varnish is not None:
            _stop(varnish)
        origin.stop()


@pytest.fixture(name="edge", scope="module")
def _edge(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with _running_edge(backing, tmp_path_factory.mktemp("edge")) as processes:
        yield processes.edge


def _nonce() -> str:
    return uuid.uuid4().hex


def _sku() -> str:
    return f"sku-{uuid.uuid4().hex[:16]}"


def _sign_in(http: httpx.Client) -> str:
    email = unique_email()
    body = {"email": email, "password": PASSWORD}
    assert http.post("/v1/users", json=body).status_code == 202
    assert http.post("/v1/sessions", json=body).status_code == 201
    return email


_WIDGET = {"name": "Widget", "description": "A fine widget", "price_cents": 1999}


def test_catalogue_reads_are_served_from_cache(edge: Edge) -> None:
    with edge.client() as writer, edge.client() as reader:
        _sign_in(writer)
        prefix = _sku()
        for suffix in ("a", "b"):
            put = writer.put(f"/v1/catalog/products/{prefix}-{suffix}", json=_WIDGET)
            assert put.status_code == 201
        detail = f"/v1/catalog/products/{prefix}-a"
        listing = f"/v1/catalog/products?after={prefix}&limit=2"

        for path in (detail, listing):
            responses = [reader.get(path) for _ in range(5)]
            assert {r.status_code for r in responses} == {200}
            assert len({r.content for r in responses}) == 1
            assert [r.headers["X-Cache"] for r in responses] == ["MISS"] + ["HIT"] * 4
            assert edge.origin_hits("GET", path) == 1
            assert "Surrogate-Key" not in responses[0].headers  # internal to the cache

            # A signed-in reader gets the same public object, and no cookie with it.
            signed_in = writer.get(path)
            assert signed_in.headers["X-Cache"] == "HIT"
            assert "Set-Cookie" not in signed_in.headers
            assert signed_in.content == responses[0].content
            assert edge.origin_hits("GET", path) == 1


def test_jwks_and_discovery_are_served_from_cache(edge: Edge) -> None:
    # Hot path 5: the edge absorbs the public key set; S22: never with a cookie.
    with edge.client() as reader:
        for path in ("/.well-known/jwks.json", "/.well-known/openid-configuration"):
            before = edge.origin_hits("GET", path)
            responses = [reader.get(path) for _ in range(5)]
            assert {r.status_code for r in responses} == {200}
            assert len({r.content for r in responses}) == 1
            assert all("Set-Cookie" not in r.headers for r in responses)
            assert [r.headers["X-Cache"] for r in responses[1:]] == ["HIT"] * 4
            assert edge.origin_hits("GET", path) - before <= 1
        assert reader.get("/.well-known/jwks.json").json()["keys"]


def test_revalidation_gets_304_at_the_edge_and_from_the_origin(edge: Edge) -> None:
    fresh = f"/probe/public?n={_nonce()}"  # s-maxage=120: stays fresh at the edge
    short = f"/probe/short?n={_nonce()}"  # s-maxage=1
    with edge.client() as http:
        first = http.get(fresh)
        conditional = http.get(fresh, headers={"If-None-Match": first.headers["ETag"]})
        assert conditional.status_code == 304
        assert conditional.content == b""
        assert conditional.headers["ETag"] == first.headers["ETag"]
        assert edge.origin_hits("GET", fresh) == 1  # Varnish answered it

        original = http.get(short)
        time.sleep(2.5)  # past s-maxage: Varnish asks the origin with If-None-Match
        again = http.get(short)
        assert again.status_code == 200
        assert again.content == original.content
        assert edge.origin_hits("GET", short, 304) == 1
        assert edge.origin_hits("GET", short, 200) == 1


def test_private_responses_never_reach_another_caller(edge: Edge) -> None:
    # S21 through a real shared cache, both orders, and S23 (conditional, no session).
    path = f"/probe/private?n={_nonce()}"
    with edge.client() as alice, edge.client() as bob, edge.client() as anonymous:
        assert anonymous.get(path).status_code == 401
        alice_email = _sign_in(alice)
        first = alice.get(path)
        assert first.status_code == 200
        assert first.json()["email"] == alice_email
        assert alice.get(path).json()["email"] == alice_email

        after = anonymous.get(path)
        assert after.status_code == 401
        assert alice_email.encode() not in after.content
        conditional = anonymous.get(path, headers={"If-None-Match": first.headers["ETag"]})
        assert conditional.status_code == 401

        bob_email = _sign_in(bob)
        assert bob.get(path).json()["email"] == bob_email
        assert edge.origin_hits("GET", path) == 3  # nothing private was served from cache

        assert alice.get("/v1/me").json()["email"] == alice_email
        me = anonymous.get("/v1/me")
        assert me.status_code == 401
        assert alice_email.encode() not in me.content


def test_responses_that_set_cookies_are_never_cached(edge: Edge) -> None:
    # S20/S22: even when the handler claimed public.
    path = f"/probe/cookie-by-hand?n={_nonce()}"
    with edge.client() as http:
        responses = [http.get(path) for _ in range(3)]
    assert all("tracker=" in r.headers.get("Set-Cookie", "") for r in responses)
    assert [r.headers["X-Cache"] for r in responses] == ["MISS"] * 3
    assert edge.origin_hits("GET", path) == 3


def test_a_write_purges_the_affected_keys(edge: Edge) -> None:
    sku = _sku()
    detail = f"/v1/catalog/products/{sku}"
    listing = f"/v1/catalog/products?after={sku[:-1]}&limit=1"
    unrelated = f"/probe/public?n={_nonce()}"
    with edge.client() as writer, edge.client() as reader:
        _sign_in(writer)
        assert writer.put(detail, json=_WIDGET).status_code == 201
        for path in (detail, listing, unrelated):
            reader.get(path)
            assert reader.get(path).headers["X-Cache"] == "HIT"

        assert writer.put(detail, json={**_WIDGET, "price_cents": 2500}).status_code == 200

        fresh = reader.get(detail)
        assert fresh.headers["X-Cache"] == "MISS"
        assert fresh.json()["price_cents"] == 2500
        assert reader.get(listing).json()["products"][0]["price_cents"] == 2500
        assert edge.origin_hits("GET", detail) == 2
        assert edge.origin_hits("GET", listing) == 2
        assert reader.get(unrelated).headers["X-Cache"] == "HIT"  # other tags stay


def test_purge_requests_are_checked(edge: Edge) -> None:
    path = f"/probe/public?n={_nonce()}"
    with edge.client() as http:
        bad = http.request("BAN", "/", headers={"X-Purge-Surrogate-Keys": "a.*"})
        assert bad.status_code == 400
        http.get(path)
        assert http.get(path).headers["X-Cache"] == "HIT"
        assert http.request("PURGE", path).status_code == 200
        assert http.get(path).headers["X-Cache"] == "MISS"
        assert (
            http.request("BAN", "/", headers={"X-Purge-Surrogate-Keys": PRODUCTS_KEY}).status_code
            == 200
        )


def test_stale_copy_is_served_while_the_origin_is_down(backing: Backing, tmp_path: Path) -> None:
    path = f"/probe/resilient?n={_nonce()}"
    with _running_edge(backing, tmp_path) as processes, processes.edge.client() as http:
        edge = processes.edge
        first = http.get(path)
        assert first.status_code == 200

        # Origin up, s-maxage passed: revalidated, not served stale from the long grace.
        time.sleep(2.5)
        revalidated = http.get(path)
        assert revalidated.headers["X-Cache"] == "MISS"
        assert edge.origin_hits("GET", path, 304) == 1

        processes.origin.stop()
        deadline = time.monotonic() + 30
        while True:
            stale = http.get(path)
            if stale.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # until Varnish's health probe sees the origin down
        assert stale.status_code == 200
        assert stale.content == first.content


class _HostileOrigin(BaseHTTPRequestHandler):
    """An origin that asks for caching it must not get; counts what reaches it."""

    hits: ClassVar[Counter[str]] = Counter()
    answers: ClassVar[dict[str, dict[str, str]]] = {
        "/public-with-cookie": {"Cache-Control": "public, max-age=60", "Set-Cookie": "s=1"},
        "/private": {"Cache-Control": "private, max-age=60"},
        "/not-public": {"Cache-Control": "max-age=60"},
        "/public-varies-on-cookie": {"Cache-Control": "public, max-age=60", "Vary": "Cookie"},
        # Contradictory directives: the restrictive one wins (S21).
        "/public-but-private": {"Cache-Control": "public, private, max-age=60"},
        "/public-but-no-store": {"Cache-Control": "public, max-age=60, no-store"},
        "/public": {"Cache-Control": "public, max-age=60"},
    }

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.hits[self.path] += 1
        self.send_response(200)
        for name, value in self.answers.get(path, {"Cache-Control": "no-store"}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_vcl_alone_refuses_to_store_what_is_not_plainly_public(tmp_path: Path) -> None:
    # S21/S22 defence in depth: even an origin that gets it wrong is not cached.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileOrigin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = free_port()
    varnish = _start_varnish(tmp_path, port, server.server_address[1])
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/healthz", varnish, tmp_path / "varnish.log")
        nonce = _nonce()
        with httpx.Client(base_url=base, timeout=10) as http:
            for path in _HostileOrigin.answers:
                for _ in range(2):
                    http.get(f"{path}?n={nonce}")
        hits = {path: _HostileOrigin.hits[f"{path}?n={nonce}"] for path in _HostileOrigin.answers}
        assert hits == {
            "/public-with-cookie": 2,
            "/private": 2,
            "/not-public": 2,
            "/public-varies-on-cookie": 2,
            "/public-but-private": 2,
            "/public-but-no-store": 2,
            "/public": 1,
        }
    finally:
        _stop(varnish)
        server.shutdown()
        server.server_close()
