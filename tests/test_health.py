"""/healthz and /readyz, including a Redis that has stopped."""

from __future__ import annotations

from pathlib import Path

from keystile.app import create_app
from keystile.embedded import EmbeddedRedis
from tests.support.backing import Backing, make_settings
from tests.support.http import Client


async def test_healthz_answers_without_touching_backing_services(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert (await response.get_json()) == {"status": "ok"}


async def test_readyz_is_200_when_postgresql_and_redis_answer(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "ready"


async def test_readyz_reports_a_stopped_redis(backing: Backing, tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path, persist=False)
    settings = make_settings(backing, redis_url=redis.start())
    app = create_app(settings)
    try:
        async with app.test_app() as test_app:
            client = test_app.test_client()
            assert (await client.get("/readyz")).status_code == 200
            redis.stop()
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert (await response.get_json())["failed"] == ["redis"]
    finally:
        redis.stop()
