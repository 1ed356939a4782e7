"""The container and orchestration files. Docker is not available where tests run, so
each file is parsed and checked for what production relies on (HAProxy's own checker
validates its config); replicas starting together migrate one at a time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from keystile.settings import Settings
from keystile.stores.redis import redis_kind
from tests.support.backing import Backing
from tests.support.binaries import binary_path, requires_binary

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _dockerfile() -> list[dict[str, Any]]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return list(parser.structure)


def test_dockerfile_is_multi_stage_and_runs_keystile_serve_as_non_root() -> None:
    instructions = _dockerfile()
    stages = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    assert len(stages) >= 2, "build and runtime stages"
    assert stages[-1].endswith("AS runtime")
    assert "slim" in stages[-1]
    runtime_start = max(i for i, ins in enumerate(instructions) if ins["instruction"] == "FROM")
    runtime = instructions[runtime_start:]
    copies = [i["value"] for i in runtime if i["instruction"] == "COPY"]
    assert any(value.startswith("--from=build") for value in copies)
    # The runtime stage installs no compiler.
    assert not any("build-essential" in i["value"] for i in runtime if i["instruction"] == "RUN")

    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users, "the runtime stage must drop root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}

    (healthcheck,) = [i["value"] for i in runtime if i["instruction"] == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    (entrypoint,) = [i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT"]
    (cmd,) = [i["value"] for i in runtime if i["instruction"] == "CMD"]
    assert (entrypoint, cmd) == ('["keystile"]', '["serve"]')
    env = " ".join(i["value"] for i in runtime if i["instruction"] == "ENV")
    # The image never starts embedded servers: PostgreSQL and Redis URLs are required.
    assert "KEYSTILE_ALLOW_EMBEDDED=false" in env
    assert "KEYSTILE_HOST=0.0.0.0" in env


def test_dockerfile_copies_what_keystile_serve_reads_at_run_time() -> None:
    copies = " ".join(i["value"] for i in _dockerfile() if i["instruction"] == "COPY")
    for needed in ("alembic.ini", "settings.toml", "hypercorn.toml", "alembic", "src"):
        assert needed in copies
        assert (ROOT / needed).exists()


def test_compose_runs_replicas_behind_haproxy_and_varnish_on_one_postgres_and_redis() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "keystile", "haproxy", "varnish"} <= set(services)

    keystile = services["keystile"]
    assert keystile["deploy"]["replicas"] >= 2
    env = keystile["environment"]
    assert "@postgres:" in env["KEYSTILE_DATABASE_URL"]
    assert env["KEYSTILE_REDIS_URL"].startswith("redis://redis:")
    assert env["KEYSTILE_SECRET_KEY"].startswith("${KEYSTILE_SECRET_KEY:?")
    assert keystile["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The stop grace period covers the drain delay plus Hypercorn's graceful timeout.
    grace = int(keystile["stop_grace_period"].rstrip("s"))
    assert grace > float(env["KEYSTILE_DRAIN_DELAY_SECONDS"]) + 20

    haproxy_mount = services["haproxy"]["volumes"][0].split(":")[0]
    assert (DEPLOY / haproxy_mount).resolve() == DEPLOY / "haproxy" / "haproxy.cfg"
    varnish_mount = services["varnish"]["volumes"][0].split(":")[0]
    assert varnish_mount == "./varnish/keystile.vcl"  # written with the HTTP caching work
    assert services["varnish"]["depends_on"] == ["haproxy"]
    # Only the edge is published; keystile replicas are reached through it.
    assert "ports" not in keystile
    assert "ports" in services["varnish"]


def test_compose_scale_overlay_puts_pgbouncer_and_a_redis_cluster_under_the_replicas() -> None:
    base = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    scale = yaml.safe_load((DEPLOY / "compose.scale.yaml").read_text())["services"]
    nodes = [name for name in scale if name.startswith("redis-") and name[-1].isdigit()]
    assert len(nodes) == 3
    assert all("--cluster-enabled" in scale[node]["command"] for node in nodes)
    env = {**base["keystile"]["environment"], **scale["keystile"]["environment"]}
    settings = Settings(
        database_url=env["KEYSTILE_DATABASE_URL"],
        redis_url=env["KEYSTILE_REDIS_URL"],
        db_pgbouncer=env["KEYSTILE_DB_PGBOUNCER"],
    )
    assert settings.database.pgbouncer
    assert "@pgbouncer:" in env["KEYSTILE_DATABASE_URL"]
    assert scale["pgbouncer"]["environment"]["PGBOUNCER_POOL_MODE"] == "transaction"
    assert redis_kind(env["KEYSTILE_REDIS_URL"]) == "cluster"
    for node in nodes:
        assert f"{node}:6379" in env["KEYSTILE_REDIS_URL"]
    # Migrations go to PostgreSQL directly, not through PgBouncer.
    assert "@postgres:" in base["migrate"]["environment"]["KEYSTILE_DATABASE_URL"]
    assert "migrate" not in scale


@requires_binary("varnishd", package="varnish")
def test_compose_points_the_varnish_vcl_at_haproxy_and_it_compiles(tmp_path: Path) -> None:
    varnish = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["varnish"]
    assert varnish["environment"]["KEYSTILE_BACKEND_HOST"] == "haproxy"
    assert varnish["environment"]["KEYSTILE_BACKEND_PORT"] == "8080"  # haproxy.cfg's bind
    (command,) = varnish["command"]
    render, start = command.replace("$$", "$").split(" && exec ")
    assert start.startswith("varnishd -F -f /tmp/keystile.vcl")
    rendered = tmp_path / "keystile.vcl"
    render = render.replace("/etc/varnish/keystile.vcl", str(DEPLOY / "varnish" / "keystile.vcl"))
    render = render.replace("/tmp/keystile.vcl", str(rendered))
    # varnishd resolves backend names as it compiles: "haproxy" only exists in compose.
    env = {"PATH": "/usr/bin:/bin", "KEYSTILE_BACKEND_HOST": "localhost"}
    subprocess.run(
        ["/bin/sh", "-c", render], env=env | {"KEYSTILE_BACKEND_PORT": "8080"}, check=True
    )
    text = rendered.read_text()
    assert '.host = "localhost";' in text
    assert '.port = "8080";' in text
    compiled = subprocess.run(
        [
            binary_path("varnishd") or "varnishd",
            *(["-j", "none"] if os.geteuid() == 0 else []),  # root: no privilege-dropping jail
            *("-C", "-f", str(rendered), "-n", str(tmp_path / "varnish")),
        ],
        capture_output=True,
        text=True,
    )
    assert compiled.returncode == 0, compiled.stderr


def _k8s() -> dict[str, dict[str, Any]]:
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(document), path
            documents[document["kind"]] = document
    return documents


def test_kubernetes_deployment_probes_readiness_and_liveness_and_drains() -> None:
    documents = _k8s()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(
        documents
    )
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {item["name"]: item["value"] for item in container["env"]}
    drain = float(env["KEYSTILE_DRAIN_DELAY_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > drain + 20  # + Hypercorn graceful_timeout
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/var/lib/keystile" in mounts  # writable data_dir (metrics files) on a read-only root
    assert "KEYSTILE_DB_STATEMENT_CACHE_SIZE" in (DEPLOY / "k8s" / "deployment.yaml").read_text()


def test_kubernetes_autoscales_on_cpu() -> None:
    hpa = _k8s()["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "keystile"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


@requires_binary("haproxy", package="haproxy")
def test_haproxy_config_is_valid_and_checks_readiness() -> None:
    haproxy = binary_path("haproxy") or "haproxy"
    config = DEPLOY / "haproxy" / "haproxy.cfg"
    result = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = config.read_text()
    assert "uri /readyz" in text
    assert "deny" in text
    assert "/metrics" in text


@pytest.mark.slow
async def test_replicas_migrating_at_once_take_turns(backing: Backing) -> None:
    # Every replica migrates as it starts; on a fresh database they must not collide.
    name = f"migrate_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(backing.database_url)
    try:
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.InsufficientPrivilegeError:
            pytest.skip("the test database user cannot create databases")
        parts = urlsplit(backing.database_url)
        url = urlunsplit(parts._replace(path=f"/{name}"))
        env = {
            "PATH": "/usr/bin:/bin",
            "KEYSTILE_SETTINGS_FILE": str(ROOT / "settings.toml"),
            "KEYSTILE_DATABASE_URL": url,
            "KEYSTILE_REDIS_URL": backing.redis_url,
            "KEYSTILE_SECRET_KEY": "m" * 40,
        }
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "keystile",
                "migrate",
                env=env,
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for _ in range(3)
        ]
        outputs = await asyncio.wait_for(
            asyncio.gather(*(process.communicate() for process in processes)), timeout=120
        )
        assert [process.returncode for process in processes] == [0, 0, 0], outputs
        migrated = await asyncpg.connect(url)
        try:
            assert await migrated.fetchval("SELECT count(*) FROM alembic_version") == 1
        finally:
            await migrated.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
