"""Settings: settings.toml and the code agree; every flat key still works, grouped in code;
bad values name their key; secrets stay secret."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from keystile.rates import Action, Rate
from keystile.settings import (
    Settings,
    SettingsError,
    flat_names,
    load_settings,
    read_secret_file,
)

ROOT = Path(__file__).resolve().parents[1]


def _value(settings: Settings, path: tuple[str, ...]) -> object:
    value: object = settings
    for part in path:
        value = value[Action(part)] if isinstance(value, dict) else getattr(value, part)
    return value


@pytest.fixture(name="no_file")
def _no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the settings file at an empty one, so only the code's defaults apply."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("KEYSTILE_SETTINGS_FILE", str(empty))
    return empty


def test_settings_toml_documents_every_default_exactly(
    no_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = load_settings()
    documented = tomllib.loads((ROOT / "settings.toml").read_text())
    with_defaults = {
        flat for flat, path in flat_names().items() if _value(defaults, path) is not None
    }
    assert set(documented) == with_defaults, "settings.toml and Settings differ in keys"
    monkeypatch.setenv("KEYSTILE_SETTINGS_FILE", str(ROOT / "settings.toml"))
    from_file = load_settings()
    for flat, path in flat_names().items():
        assert _value(from_file, path) == _value(defaults, path), f"{flat}: toml != code"


def test_every_flat_environment_name_sets_its_grouped_field(
    no_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYSTILE_DB_POOL_SIZE", "17")
    monkeypatch.setenv("KEYSTILE_HASH_THREADS", "3")
    monkeypatch.setenv("KEYSTILE_SESSION_IDLE_TIMEOUT_SECONDS", "120")
    monkeypatch.setenv("KEYSTILE_TOKEN_SCOPES", '["account", "reports"]')
    monkeypatch.setenv("KEYSTILE_RATE_LIMIT_LOGIN_PER_IP", "5/10s")
    monkeypatch.setenv("KEYSTILE_RATE_LIMIT_REGISTER_PER_ACCOUNT", "off")
    settings = load_settings()
    assert settings.database.pool_size == 17
    assert settings.hashing.threads == 3
    assert settings.sessions.idle_timeout_seconds == 120
    assert settings.tokens.scopes == ["account", "reports"]
    assert settings.limits.rates[Action.LOGIN].per_ip == Rate(5, 10)
    assert settings.limits.rates[Action.REGISTER].per_account is None
    # Scopes not given keep their defaults.
    assert settings.limits.rates[Action.LOGIN].per_account == Rate(10, 60)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text('db_pool_size = 12\nrate_limit_token_per_ip = "7/minute"\n')
    monkeypatch.setenv("KEYSTILE_SETTINGS_FILE", str(settings_file))
    assert load_settings().database.pool_size == 12
    assert load_settings().limits.rates[Action.TOKEN].per_ip == Rate(7, 60)
    monkeypatch.setenv("KEYSTILE_DB_POOL_SIZE", "17")
    assert load_settings().database.pool_size == 17


def test_settings_file_keys_may_be_flat_or_grouped_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(
        'hash_threads = 2\n[database]\npool_size = 9\n[limits.rates.refresh]\nper_ip = "1/s"\n'
    )
    monkeypatch.setenv("KEYSTILE_SETTINGS_FILE", str(settings_file))
    settings = load_settings()
    assert settings.hashing.threads == 2
    assert settings.database.pool_size == 9
    assert settings.limits.rates[Action.REFRESH].per_ip == Rate(1, 1)


def test_flat_keyword_arguments_still_work(no_file: Path) -> None:
    settings = Settings(db_pool_size=4, cookie_secure=False, rate_limit_login_per_ip="off")
    assert settings.database.pool_size == 4
    assert settings.sessions.cookie_secure is False
    assert settings.limits.rates[Action.LOGIN].per_ip is None


def test_cookie_secure_false_with_an_https_public_url_is_refused(
    no_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S8: behind TLS a session cookie without Secure is a misconfiguration, refused at start-up.
    monkeypatch.setenv("KEYSTILE_COOKIE_SECURE", "false")
    monkeypatch.setenv("KEYSTILE_PUBLIC_URL", "https://auth.example.com")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "cookie_secure = false with the https public_url https://auth.example.com" in message
    assert "KEYSTILE_COOKIE_SECURE" in message
    assert "KEYSTILE_PUBLIC_URL" in message
    assert "Value error" not in message


def test_cookie_secure_false_with_an_http_public_url_is_plain_http_development(
    no_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S8: what `make run` and the plain-http test servers set keeps working.
    monkeypatch.setenv("KEYSTILE_COOKIE_SECURE", "false")
    monkeypatch.setenv("KEYSTILE_PUBLIC_URL", "http://127.0.0.1:8000")
    assert load_settings().sessions.cookie_secure is False
    monkeypatch.setenv("KEYSTILE_COOKIE_SECURE", "true")
    monkeypatch.setenv("KEYSTILE_PUBLIC_URL", "https://auth.example.com")
    assert load_settings().sessions.cookie_secure is True


def test_rate_table_has_every_action(no_file: Path) -> None:
    assert set(load_settings().limits.rates) == set(Action)


def test_invalid_value_error_names_the_key(no_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSTILE_DB_POOL_SIZE", "many")
    with pytest.raises(SettingsError, match=r"db_pool_size.*KEYSTILE_DB_POOL_SIZE"):
        load_settings()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KEYSTILE_PASSWORD_MIN_LENGTH", "7"),
        ("KEYSTILE_PASSWORD_MAX_LENGTH", "63"),
        ("KEYSTILE_PASSWORD_MAX_LENGTH", "1025"),
    ],
)
def test_password_lengths_outside_the_policy_bounds_are_refused(
    no_file: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    # S1: a deployment may ask for at least 8 and allow 64..1024 characters, nothing else.
    monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=key):
        load_settings()


@pytest.mark.parametrize(
    ("memory_kib", "time_cost"),
    [("19455", "2"), ("47103", "1"), ("12287", "3"), ("9215", "4"), ("7167", "9"), ("64", "1")],
)
def test_argon2_parameters_below_the_owasp_minimum_are_refused(
    no_file: Path, monkeypatch: pytest.MonkeyPatch, memory_kib: str, time_cost: str
) -> None:
    # S4: a deployment cannot store weaker hashes than OWASP's argon2id minimum.
    monkeypatch.setenv("KEYSTILE_ARGON2_MEMORY_KIB", memory_kib)
    monkeypatch.setenv("KEYSTILE_ARGON2_TIME_COST", time_cost)
    with pytest.raises(SettingsError, match=r"below OWASP's minimum.*argon2_allow_weak") as error:
        load_settings()
    assert f"argon2_memory_kib = {memory_kib} with argon2_time_cost = {time_cost}" in str(
        error.value
    )


@pytest.mark.parametrize(
    ("memory_kib", "time_cost"),
    [("19456", "2"), ("47104", "1"), ("12288", "3"), ("9216", "4"), ("7168", "5")],
)
def test_each_owasp_argon2_configuration_is_accepted(
    no_file: Path, monkeypatch: pytest.MonkeyPatch, memory_kib: str, time_cost: str
) -> None:
    # S4: OWASP's equally strong alternatives to the default m=19 MiB, t=2.
    monkeypatch.setenv("KEYSTILE_ARGON2_MEMORY_KIB", memory_kib)
    monkeypatch.setenv("KEYSTILE_ARGON2_TIME_COST", time_cost)
    hashing = load_settings().hashing
    assert (hashing.memory_kib, hashing.time_cost) == (int(memory_kib), int(time_cost))


def test_weak_argon2_parameters_need_the_explicit_test_setting(
    no_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S4: the cheap hashing of a test suite is asked for by name, never by accident.
    monkeypatch.setenv("KEYSTILE_ARGON2_MEMORY_KIB", "64")
    monkeypatch.setenv("KEYSTILE_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("KEYSTILE_ARGON2_ALLOW_WEAK", "true")
    hashing = load_settings().hashing
    assert (hashing.memory_kib, hashing.time_cost, hashing.allow_weak) == (64, 1, True)


def test_invalid_rate_error_names_the_flat_key(
    no_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYSTILE_RATE_LIMIT_LOGIN_PER_ACCOUNT", "lots")
    with pytest.raises(
        SettingsError,
        match=r"rate_limit_login_per_account \(KEYSTILE_RATE_LIMIT_LOGIN_PER_ACCOUNT\).*30/minute",
    ):
        load_settings()


def test_invalid_toml_value_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text('token_algorithm = "HS256"\nno_such_key = 1\n')
    monkeypatch.setenv("KEYSTILE_SETTINGS_FILE", str(settings_file))
    with pytest.raises(SettingsError, match=r"token_algorithm .*EdDSA") as caught:
        load_settings()
    assert "no_such_key: not a keystile setting;" not in str(caught.value)  # nothing near
    assert "no_such_key: not a keystile setting" in str(caught.value)


def test_a_misspelt_key_in_the_settings_file_is_refused_with_the_nearest_real_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("argon2_memory_kb = 65536\n")
    monkeypatch.setenv("KEYSTILE_SETTINGS_FILE", str(settings_file))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "invalid settings: argon2_memory_kb: not a keystile setting;"
        " did you mean argon2_memory_kib?"
    )


def test_a_settings_file_named_but_missing_is_refused_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYSTILE_SETTINGS_FILE", str(tmp_path / "settngs.toml"))
    with pytest.raises(
        SettingsError, match=r"KEYSTILE_SETTINGS_FILE: .*settngs.toml is not a file"
    ):
        load_settings()


def test_a_settings_file_that_is_not_toml_names_the_file_and_the_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("db_pool_size = = 12\n")
    monkeypatch.setenv("KEYSTILE_SETTINGS_FILE", str(settings_file))
    with pytest.raises(SettingsError, match=r"settings file .*settings.toml: .*line 1"):
        load_settings()


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("KEYSTILE_EXTENSIONS", "extensions (KEYSTILE_EXTENSIONS): not valid JSON"),
        ("KEYSTILE_HTTP_CACHE__PURGE_URLS", "http_cache (KEYSTILE_HTTP_CACHE__*): not valid JSON"),
        ("KEYSTILE_PURGE_URLS", 'purge_urls (KEYSTILE_PURGE_URLS): must be a JSON list, e.g. ["'),
        ("KEYSTILE_TOKEN_SCOPES", "token_scopes (KEYSTILE_TOKEN_SCOPES): must be a JSON list"),
    ],
)
def test_a_list_not_given_as_json_names_the_key_and_says_json(
    no_file: Path, monkeypatch: pytest.MonkeyPatch, key: str, named: str
) -> None:
    monkeypatch.setenv(key, "keystile_catalog:CatalogExtension")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert named in str(caught.value)


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


def test_a_secret_key_file_that_is_missing_or_a_directory_is_named_with_why(
    tmp_path: Path,
) -> None:
    with pytest.raises(SettingsError, match=r"secret_key_file: cannot read .*: No such file"):
        read_secret_file(tmp_path / "missing")
    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o700)
    with pytest.raises(SettingsError, match=r"secret_key_file: .*secrets is not a file"):
        read_secret_file(directory)
    settings = Settings(secret_key="a" * 40, secret_key_fallbacks_file=tmp_path / "gone")
    with pytest.raises(SettingsError, match=r"secret_key_fallbacks_file: cannot read .*gone"):
        settings.read_secret_key_fallbacks()


def test_previous_secret_keys_come_from_the_variable_and_the_file_each_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "fallbacks"
    path.write_text(f"{'b' * 40}\n\n  {'c' * 40}  \n")
    os.chmod(path, 0o600)
    monkeypatch.setenv("KEYSTILE_SECRET_KEY", "a" * 40)
    monkeypatch.setenv("KEYSTILE_SECRET_KEY_FALLBACKS", f'["{"b" * 40}", "{"d" * 40}"]')
    monkeypatch.setenv("KEYSTILE_SECRET_KEY_FALLBACKS_FILE", str(path))
    settings = load_settings()
    assert settings.read_secret_key_fallbacks() == [b"b" * 40, b"d" * 40, b"c" * 40]
    assert "d" * 40 not in repr(settings)
    assert (
        Settings(
            secret_key_fallbacks=[], secret_key_fallbacks_file=None
        ).read_secret_key_fallbacks()
        == []
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not json, maybe a bare key " + "x" * 32, "must be a JSON list of strings"),
        ('"' + "x" * 40 + '"', "must be a JSON list of strings"),
        ('["' + "x" * 40 + '", 7]', "must be a JSON list of strings"),
        ('["' + "x" * 40 + '", "short-' + "y" * 10 + '"]', "item 1 must be at least 32"),
    ],
)
def test_a_bad_previous_secret_key_names_the_setting_never_the_value(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("KEYSTILE_SECRET_KEY_FALLBACKS", value)
    with pytest.raises(SettingsError, match="secret_key_fallbacks") as caught:
        load_settings()
    assert problem in str(caught.value)
    assert "x" * 32 not in str(caught.value)
    assert "y" * 10 not in str(caught.value)


def test_settings_built_directly_never_echo_a_bad_secret() -> None:
    # S25: pydantic's own error (not load_settings') would quote the input by default.
    for values in (
        {"secret_key": "short-" + "y" * 10},
        {"secret_key_fallbacks": '["' + "x" * 40 + '", "short-' + "y" * 10 + '"]'},
        {"secret_key_fallbacks": "not json, maybe a bare key " + "x" * 32},
    ):
        with pytest.raises(ValidationError) as caught:
            Settings(**values)
        assert "x" * 32 not in str(caught.value)
        assert "y" * 10 not in str(caught.value)


def test_the_current_secret_key_as_a_previous_one_is_refused() -> None:
    # Nothing was rotated: the operator set the old key as current, or forgot to change it.
    settings = Settings(secret_key="a" * 40, secret_key_fallbacks=["b" * 40, "a" * 40])
    with pytest.raises(SettingsError, match="secret_key_fallbacks: one of them is the current"):
        settings.read_secret_key_fallbacks()


def test_a_previous_secret_keys_file_must_be_private_and_hold_long_keys(tmp_path: Path) -> None:
    path = tmp_path / "fallbacks"
    path.write_text(f"{'b' * 40}\n")
    os.chmod(path, 0o640)
    settings = Settings(secret_key="a" * 40, secret_key_fallbacks_file=path)
    with pytest.raises(SettingsError, match=r"secret_key_fallbacks_file: .* \(chmod 600\)"):
        settings.read_secret_key_fallbacks()
    path.write_text(f"{'b' * 40}\n{'s' * 31}\n")
    os.chmod(path, 0o600)
    with pytest.raises(
        SettingsError, match=r"secret_key_fallbacks_file: line 2 of .* fewer than 32"
    ):
        settings.read_secret_key_fallbacks()


def test_default_hash_threads_share_the_cores_among_workers() -> None:
    cores = os.cpu_count() or 1
    assert Settings(workers=1).hash_thread_count == cores
    assert Settings(workers=cores).hash_thread_count == 1
    assert Settings(workers=cores * 4).hash_thread_count == 1  # never zero
    assert Settings(workers=2, hash_threads=3).hash_thread_count == 3
