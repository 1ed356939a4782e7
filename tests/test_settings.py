"""Settings: settings.toml and the code agree; bad values name their key; secrets stay secret."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from keystile.settings import Settings, SettingsError, load_settings, read_secret_file

ROOT = Path(__file__).resolve().parents[1]


def test_settings_toml_documents_every_default_exactly() -> None:
    documented = tomllib.loads((ROOT / "settings.toml").read_text())
    defaults = {
        name: field.default
        for name, field in Settings.model_fields.items()
        if field.default is not None
    }
    assert set(documented) == set(defaults), "settings.toml and Settings differ in keys"
    for key, value in documented.items():
        default = defaults[key]
        assert str(default) == str(value), f"{key}: toml {value!r} != code {default!r}"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSTILE_DB_POOL_SIZE", "17")
    assert load_settings().db_pool_size == 17


def test_invalid_value_error_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSTILE_DB_POOL_SIZE", "many")
    with pytest.raises(SettingsError, match=r"db_pool_size.*KEYSTILE_DB_POOL_SIZE"):
        load_settings()


def test_short_secret_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSTILE_SECRET_KEY", "too-short")
    with pytest.raises(SettingsError, match="secret_key"):
        load_settings()


def test_secret_key_is_hidden_in_repr() -> None:
    settings = Settings(secret_key="s" * 40)
    assert "s" * 40 not in repr(settings)


def test_secret_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("k" * 64)
    os.chmod(path, 0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        read_secret_file(path)
    os.chmod(path, 0o600)
    assert read_secret_file(path) == b"k" * 64


def test_default_hash_threads_share_the_cores_among_workers() -> None:
    cores = os.cpu_count() or 1
    assert Settings(workers=1).hash_thread_count == cores
    assert Settings(workers=cores).hash_thread_count == 1
    assert Settings(workers=cores * 4).hash_thread_count == 1  # never zero
    assert Settings(workers=2, hash_threads=3).hash_thread_count == 3
