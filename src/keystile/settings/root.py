"""The root model, `Settings`, and the files it reads: settings.toml and the secret key."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from keystile.settings.groups import _empty_is_none
from keystile.settings.infrastructure import (
    CacheSettings,
    DatabaseSettings,
    HttpCacheSettings,
    LogSettings,
    RedisSettings,
    ServingSettings,
)
from keystile.settings.integrations import EmailSettings, MachineSettings
from keystile.settings.security import (
    HashingSettings,
    LimitSettings,
    MfaSettings,
    PasswordSettings,
    RetentionSettings,
    SessionSettings,
    TokenSettings,
)

_ENV_PREFIX = "KEYSTILE_"
_PROJECT_ROOT = Path(__file__).resolve().parents[3]  # src/keystile/settings/root.py


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the key."""


def find_settings_file() -> Path | None:
    """Return the settings file: $KEYSTILE_SETTINGS_FILE, ./settings.toml, or the project's."""
    explicit = os.environ.get(f"{_ENV_PREFIX}SETTINGS_FILE")
    if explicit:
        # Named on purpose: a file that is not there is a mistake, never "no settings file".
        if not Path(explicit).is_file():
            raise SettingsError(f"KEYSTILE_SETTINGS_FILE: {explicit} is not a file")
        return Path(explicit)
    for candidate in (Path.cwd() / "settings.toml", _PROJECT_ROOT / "settings.toml"):
        if candidate.is_file():
            return candidate
    return None


def read_secret_file(path: Path, *, setting: str = "secret_key_file") -> bytes:
    """Read a secret from a file that only its owner can read."""
    key = _read_private(path, setting).strip()
    if len(key) < 32:
        raise SettingsError(f"{setting}: {path} holds fewer than 32 bytes")
    return key


def read_secret_lines(path: Path, *, setting: str) -> list[bytes]:
    """Read one secret per line (blank lines skipped) from a file only its owner can read."""
    keys = []
    for number, line in enumerate(_read_private(path, setting).splitlines(), start=1):
        key = line.strip()
        if not key:
            continue
        if len(key) < 32:
            raise SettingsError(f"{setting}: line {number} of {path} holds fewer than 32 bytes")
        keys.append(key)
    return keys


def _read_private(path: Path, setting: str) -> bytes:
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise SettingsError(f"{setting}: {path} is not a file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SettingsError(f"{setting}: {path} must not be readable by others (chmod 600)")
        return path.read_bytes()
    except OSError as exc:  # missing, or not readable by this user
        raise SettingsError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def _fallback_list(text: str) -> list[str]:
    """Return the keys of `secret_key_fallbacks`' JSON; ValueError never quoting them."""
    try:
        keys = json.loads(text)
    except ValueError:
        raise ValueError("must be a JSON list of strings") from None
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise ValueError("must be a JSON list of strings")
    return keys


class Settings(BaseSettings):
    """Every knob keystile has, by concern. `settings.toml` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,  # a bad secret or URL (with its password) is never echoed
    )

    serving: ServingSettings = ServingSettings()
    logs: LogSettings = LogSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    # Secrets: the environment or a 0600 file only; embedded mode makes one.
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    # Previous keys, still accepted, never used to make anything (docs/operations.md,
    # "Rotating the secret key"). Kept as the JSON text, so no error shows a key.
    secret_key_fallbacks: SecretStr | None = None
    secret_key_fallbacks_file: Path | None = None
    hashing: HashingSettings = HashingSettings()
    passwords: PasswordSettings = PasswordSettings()
    cache: CacheSettings = CacheSettings()
    sessions: SessionSettings = SessionSettings()
    http_cache: HttpCacheSettings = HttpCacheSettings()
    extensions: list[str] = Field(default=[])
    limits: LimitSettings = LimitSettings()
    retention: RetentionSettings = RetentionSettings()
    tokens: TokenSettings = TokenSettings()
    machine: MachineSettings = MachineSettings()
    email: EmailSettings = EmailSettings()
    mfa: MfaSettings = MfaSettings()

    _secret_key_empty = field_validator("secret_key", "secret_key_fallbacks", mode="before")(
        _empty_is_none
    )

    @field_validator("extensions")
    @classmethod
    def _extensions_are_import_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            module, _, attribute = path.partition(":")
            if not module or not attribute:
                raise ValueError(f"{path!r} is not of the form 'package.module:Name'")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("secret_key_fallbacks", mode="before")
    @classmethod
    def _fallbacks_as_json(cls, value: object) -> object:
        # A list (settings.toml, keyword arguments) is kept as the JSON text the variable holds.
        return json.dumps(value) if isinstance(value, list | tuple) else value

    @field_validator("secret_key_fallbacks")
    @classmethod
    def _fallbacks_are_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            keys = _fallback_list(value.get_secret_value())
            for index, key in enumerate(keys):
                if len(key) < 32:
                    raise ValueError(f"item {index} must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def _https_has_secure_cookies(self) -> Settings:
        # S8: behind TLS the cookies must be Secure; false is for plain-http development only.
        public_url = self.email.public_url
        if not self.sessions.cookie_secure and urlsplit(public_url).scheme == "https":
            raise ValueError(
                f"cookie_secure = false with the https public_url {public_url} would send"
                " the session cookie to browsers without Secure. Remove cookie_secure ="
                " false (KEYSTILE_COOKIE_SECURE); it is only for plain-http development,"
                " where public_url (KEYSTILE_PUBLIC_URL) is an http:// address"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Imported here: the sources read the flat names, which are this model's fields.
        from keystile.settings.loading import _FlatEnvironment, _Grouped

        sources: list[PydanticBaseSettingsSource] = [
            _Grouped(init_settings),
            env_settings,  # top-level keys, and groups as KEYSTILE_<GROUP>__<KEY>
            _Grouped(_FlatEnvironment(settings_cls)),
        ]
        toml_file = find_settings_file()
        if toml_file is not None:
            try:
                toml_source = TomlConfigSettingsSource(settings_cls, toml_file=toml_file)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                raise SettingsError(f"settings file {toml_file}: {reason}") from None
            sources.append(_Grouped(toml_source))
        return tuple(sources)

    @property
    def embedded(self) -> bool:
        """True when PostgreSQL or Redis must be started locally."""
        return self.database.url is None or self.redis.url is None

    @property
    def hash_thread_count(self) -> int:
        """Hash threads per worker: by default the workers share the cores between them.

        More memory-hard hashes at once than cores only thrash the caches: each hash
        then costs more CPU and the event loops starve (measured by `make bench`).
        """
        return self.hashing.threads or max(1, (os.cpu_count() or 1) // self.serving.workers)

    def read_secret_key(self) -> bytes | None:
        """Return the secret key from the environment or the 0600 key file, if any."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        if self.secret_key_file is None:
            return None
        return read_secret_file(self.secret_key_file)

    def read_secret_key_fallbacks(self) -> list[bytes]:
        """Return the previous secret keys still accepted, from the environment and the file.

        Each once, in the order given (the variable's first); raise `SettingsError` if one
        is the current key, which would mean the key was not rotated at all.
        """
        keys: list[bytes] = []
        if self.secret_key_fallbacks is not None:
            keys += [
                k.encode() for k in _fallback_list(self.secret_key_fallbacks.get_secret_value())
            ]
        if self.secret_key_fallbacks_file is not None:
            keys += read_secret_lines(
                self.secret_key_fallbacks_file, setting="secret_key_fallbacks_file"
            )
        if self.read_secret_key() in keys:
            raise SettingsError(
                "secret_key_fallbacks: one of them is the current secret_key; a fallback is"
                " a previous key (to rotate, set a new secret_key and move the old one here)"
            )
        return list(dict.fromkeys(keys))
