"""Loading: every flat key and the field it sets, the sources that move flat keys into
their groups, and `load_settings`, whose errors name the flat key."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from functools import cache
from typing import Any, get_origin

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource
from pydantic_settings import SettingsError as PydanticSettingsError

from keystile.rates import Action
from keystile.settings.groups import _Group
from keystile.settings.root import _ENV_PREFIX, Settings, SettingsError
from keystile.settings.security import _SCOPES


@cache
def flat_names() -> dict[str, tuple[str, ...]]:
    """Return every flat key (`db_pool_size`) and the path of the field it sets.

    The path is `("database", "pool_size")`, or for a rate limit
    `("limits", "rates", "login", "per_ip")`; top-level fields map to themselves.
    """
    names: dict[str, tuple[str, ...]] = {}
    for group, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, _Group)):
            names[group] = (group,)
            continue
        for name, sub in model.model_fields.items():
            if name == "rates":
                continue
            names[_flat_name(name, sub)] = (group, name)
    for action in Action:
        for scope in _SCOPES:
            names[f"rate_limit_{action.value}_{scope}"] = ("limits", "rates", action.value, scope)
    return names


def _flat_name(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        last = alias.choices[-1]
        return last if isinstance(last, str) else name
    return name


@cache
def _complex_flat_names() -> frozenset[str]:
    """Flat keys whose environment value is JSON (lists), as pydantic-settings reads them."""
    complex_names = set()
    for flat, path in flat_names().items():
        if len(path) != 2:
            continue
        sub = Settings.model_fields[path[0]].annotation
        assert isinstance(sub, type)
        assert issubclass(sub, BaseModel)
        if get_origin(sub.model_fields[path[1]].annotation) in (list, dict):
            complex_names.add(flat)
    return frozenset(complex_names)


def _grouped(values: Mapping[str, Any]) -> dict[str, Any]:
    """Move flat keys (`db_pool_size`) into their groups (`database.pool_size`)."""
    names = flat_names()
    grouped: dict[str, Any] = {}
    flat_items = []
    for key, value in values.items():
        path = names.get(key)
        if path is None or len(path) == 1:
            grouped[key] = value
        else:
            flat_items.append((path, value))
    for path, value in flat_items:  # after nested values, so a flat key wins within a source
        target = grouped
        for part in path[:-1]:
            existing = target.get(part)
            if isinstance(existing, BaseModel):
                existing = existing.model_dump()
            target[part] = target = dict(existing) if isinstance(existing, Mapping) else {}
        target[path[-1]] = value
    return grouped


class _Grouped(PydanticBaseSettingsSource):
    """Another source's values, with flat keys moved into their groups."""

    def __init__(self, source: PydanticBaseSettingsSource) -> None:
        super().__init__(source.settings_cls)
        self._source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _grouped(self._source())

    def __repr__(self) -> str:
        return f"_Grouped({self._source!r})"


class _FlatEnvironment(PydanticBaseSettingsSource):
    """`KEYSTILE_<FLAT KEY>` variables for grouped fields (lists as JSON)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environment = {key.upper(): value for key, value in os.environ.items()}
        complex_names = _complex_flat_names()
        values: dict[str, Any] = {}
        for flat, path in flat_names().items():
            raw = environment.get(f"{_ENV_PREFIX}{flat.upper()}")
            if raw is None or len(path) == 1:
                continue
            values[flat] = _json_or_text(raw) if flat in complex_names else raw
        return values


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # validation then says what it should have been


def setting_name(location: tuple[str | int, ...]) -> str:
    """Return the flat key a validation error's location points at (`db_pool_size`)."""
    parts = tuple(str(part) for part in location)
    by_path = {path: flat for flat, path in flat_names().items()}
    for end in range(len(parts), 0, -1):
        flat = by_path.get(parts[:end])
        if flat is not None:
            return flat
    return ".".join(parts) or "settings"


_JSON_LIST = 'must be a JSON list, e.g. ["first", "second"]'


def _message(error: Any) -> str:
    """Return a validation error's message for people: a list given as text says so."""
    if error["type"] == "list_type" and isinstance(error.get("input"), str):
        return _JSON_LIST
    return str(error["msg"]).removeprefix("Value error, ")


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation failure into one error naming each bad key."""
    try:
        return Settings(**overrides)
    except PydanticSettingsError as exc:
        # pydantic-settings decodes top-level lists and `KEYSTILE_<GROUP>__...` values as
        # JSON itself, and says only which field (`extensions`, or a group) failed.
        field = re.search(r'field "(\w+)"', str(exc))
        key = field.group(1) if field else "settings"
        env = f"{_ENV_PREFIX}{key.upper()}"
        if key in Settings.model_fields and key not in flat_names():
            env += "__*"  # a group: one of its KEYSTILE_<GROUP>__<KEY> variables
        raise SettingsError(
            f"invalid settings: {key} ({env}): not valid JSON; lists are given as JSON,"
            ' e.g. ["first", "second"]'
        ) from None
    except ValidationError as exc:
        problems = []
        flat = flat_names()
        for error in exc.errors():
            if not error["loc"]:
                # A check across groups (`cookie_secure` with `public_url`) names its keys.
                problems.append(_message(error))
                continue
            key = setting_name(error["loc"])
            if error["type"] == "extra_forbidden":
                # Only a settings file or a keyword names an unknown key (unknown variables
                # are ignored): say so, with the nearest real name, rather than pydantic's words.
                near = difflib.get_close_matches(key, flat, n=1)
                hint = f"; did you mean {near[0]}?" if near else ""
                problems.append(f"{key}: not a keystile setting{hint}")
                continue
            if key not in flat and key in Settings.model_fields:
                # A group's own check (`hashing`), which names its settings itself.
                problems.append(f"{key}: {_message(error)}")
                continue
            env = f"{_ENV_PREFIX}{key.upper().replace('.', '__')}"
            problems.append(f"{key} ({env}): {_message(error)}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
