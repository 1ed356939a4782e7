"""The docs stand alone: a short README, every requirement id documented, a site that builds."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECURITY_PAGE = ROOT / "docs" / "security.md"
README_MAX_LINES = 200


def _docs_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_opens_with_exactly_the_two_commands() -> None:
    text = README.read_text()
    title, _, rest = text.partition("\n")
    assert title.startswith("# keystile")
    first_block = re.match(r"\s*```sh\n(?P<body>.*?)\n```", rest, re.DOTALL)
    assert first_block, "the first thing after the title is a shell block"
    commands = [line.split("#", 1)[0].strip() for line in first_block["body"].splitlines()]
    assert commands == ["make run", "make test"]


def test_readme_links_point_at_files_in_the_repository() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", README.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def test_the_command_line_page_lists_every_command_with_what_it_does() -> None:
    import argparse

    from keystile.cli import _parser

    assert "<!-- generated: cli -->" in (ROOT / "docs" / "cli.md").read_text()
    table = _docs_hooks().cli_markdown()

    def commands(parser: argparse.ArgumentParser, path: str) -> list[str]:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            return [path]
        return [
            command
            for group in groups
            for name, sub in group.choices.items()
            for command in commands(sub, f"{path} {name}")
        ]

    for command in commands(_parser(), "keystile"):
        [row] = [
            line
            for line in table.splitlines()
            if line.startswith(f"| `{command} ") or line.startswith(f"| `{command}`")
        ]
        assert not row.endswith("|  |"), f"{command} has no help text"
    assert "`--after`: the page after this cursor" in table  # options too


def test_the_settings_table_names_every_key_and_the_variable_that_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from keystile.settings import load_settings
    from keystile.settings.loading import flat_names

    assert "<!-- generated: settings -->" in (ROOT / "docs" / "operations.md").read_text()
    table = _docs_hooks().settings_markdown()
    rows = {
        cells[0].strip("`"): cells
        for line in table.splitlines()
        if line.startswith("| `")
        for cells in [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))]]
    }
    assert set(rows) == set(flat_names()), "the table and the settings differ in keys"
    assert "### Other" not in table, "a key settings.toml does not place in a section"
    for key, (_, variable, _kind, _default, meaning) in rows.items():
        assert variable == f"`KEYSTILE_{key.upper()}`", key
        assert meaning, f"{key} has no meaning: add a comment beside it in settings.toml"
    assert rows["rate_limit_refresh_per_account"][3] == '`"60/minute"`'
    # The variables named are the ones read: one from a group, one rate, one top-level.
    monkeypatch.setenv("KEYSTILE_DB_POOL_SIZE", "7")
    monkeypatch.setenv("KEYSTILE_RATE_LIMIT_REFRESH_PER_ACCOUNT", "5/hour")
    monkeypatch.setenv("KEYSTILE_SECRET_KEY", "k" * 40)
    settings = load_settings()
    assert settings.database.pool_size == 7
    assert str(settings.limits.rates["refresh"].per_account) == "5/3600s"


def test_every_requirement_named_in_code_or_tests_has_a_section() -> None:
    hooks = _docs_hooks()
    documented = hooks.documented_requirements()
    mentioned = hooks.mentioned_requirements("src", "tests")
    missing = {f"S{n}": places[:3] for n, places in mentioned.items() if n not in documented}
    assert not missing, f"named in code but not in docs/security.md: {missing}"


def test_the_security_page_covers_the_whole_requirement_list_in_order() -> None:
    numbers = [int(n) for n in re.findall(r"^### S(\d+)\b", SECURITY_PAGE.read_text(), re.M)]
    assert numbers == list(range(1, 46))


def test_every_requirement_not_planned_is_proved_by_a_named_test() -> None:
    hooks = _docs_hooks()
    markers = re.findall(r"<!-- generated: tests S(\d+)(.*?)-->", SECURITY_PAGE.read_text())
    assert len(markers) == 45, "each requirement section has a generated test list"
    proved = hooks.tests_by_requirement()
    unproved = [f"S{n}" for n, args in markers if "planned=" not in args and int(n) not in proved]
    assert not unproved, f"no test names {unproved}; name one or mark it planned"


def test_code_points_at_documents_inside_the_repository() -> None:
    outside = re.compile(r"BENCHMARK\.md|DESIGN|shared/SECURITY\.md|the security requirement list")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("src", "tests", "alembic", "examples")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if outside.search(line)
    ]
    assert not offenders, f"point these at docs/security.md or docs/performance.md: {offenders}"


@pytest.mark.slow
def test_documentation_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        mkdocs = Path(shutil.which("mkdocs") or "")
    if not mkdocs.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is missing: pip install -e '.[docs]'")
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]'")
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for page in ("api", "operations", "security"):
        assert (tmp_path / "site" / page / "index.html").is_file()
    assert "KEYSTILE_DB_POOL_SIZE" in (tmp_path / "site" / "operations" / "index.html").read_text()
    assert "/v1/tokens" in (tmp_path / "site" / "api" / "index.html").read_text()
