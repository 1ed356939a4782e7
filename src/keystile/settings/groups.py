"""What every settings group shares: frozen, strict, and its fields' flat names.

The names here start with `_`: they belong to the `keystile.settings` package, whose
group modules use them, and to nothing outside it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict


def _flat_names(prefix: str = "", *, keep: Collection[str] = (), **renamed: str) -> ConfigDict:
    """A group's config: each field is also accepted by its historical flat name.

    The flat name is `renamed[name]`, else `name` itself if in `keep`, else
    `prefix + name` (`DatabaseSettings.pool_size` is `db_pool_size`).
    """

    def alias(name: str) -> AliasChoices | str:
        flat = renamed.get(name) or (name if name in keep else prefix + name)
        return name if flat == name else AliasChoices(name, flat)

    return ConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        alias_generator=AliasGenerator(validation_alias=alias),
    )


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
