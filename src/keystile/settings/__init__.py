"""Settings: `settings.toml` defaults, overridden by `KEYSTILE_*` environment variables.

Settings are grouped by concern (`settings.database.pool_size`, `settings.hashing.threads`,
`settings.limits.rates[Action.LOGIN]`), while every key keeps its flat name in
`settings.toml` and the environment (`db_pool_size`, `KEYSTILE_DB_POOL_SIZE`): each
grouped field lists its flat name as a `validation_alias`, and every source is
flattened into the groups before validation (see `flat_names`). A group may also be
written as a TOML table (`[database] pool_size = 20`) or as `KEYSTILE_DATABASE__POOL_SIZE`.

The modules: `root` (the `Settings` model, the settings file and the secret key file),
`loading` (flat names, the sources that group them, `load_settings`), and the groups in
`infrastructure`, `security` and `integrations` (sharing `groups`). Import from here.
"""

from keystile.settings.infrastructure import (
    CacheSettings,
    DatabaseSettings,
    HttpCacheSettings,
    LogSettings,
    RedisSettings,
    ServingSettings,
)
from keystile.settings.integrations import EmailSettings, MachineSettings
from keystile.settings.loading import flat_names, load_settings, setting_name
from keystile.settings.root import Settings, SettingsError, find_settings_file, read_secret_file
from keystile.settings.security import (
    HashingSettings,
    LimitSettings,
    MfaSettings,
    PasswordSettings,
    RetentionSettings,
    SessionSettings,
    TokenSettings,
)

__all__ = [
    "CacheSettings",
    "DatabaseSettings",
    "EmailSettings",
    "HashingSettings",
    "HttpCacheSettings",
    "LimitSettings",
    "LogSettings",
    "MachineSettings",
    "MfaSettings",
    "PasswordSettings",
    "RedisSettings",
    "RetentionSettings",
    "ServingSettings",
    "SessionSettings",
    "Settings",
    "SettingsError",
    "TokenSettings",
    "find_settings_file",
    "flat_names",
    "load_settings",
    "read_secret_file",
    "setting_name",
]
