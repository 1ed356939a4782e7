"""The JSON API blueprints, under /v1."""

from quart import Blueprint

from keystile.web.api import (
    admin,
    api_keys,
    email,
    me,
    mfa,
    oauth,
    passkeys,
    reauth,
    sessions,
    tokens,
    users,
)

__all__ = ["blueprints"]

blueprints: tuple[Blueprint, ...] = (
    users.blueprint,
    sessions.blueprint,
    me.blueprint,
    tokens.blueprint,
    # machine access (issue 16)
    api_keys.blueprint,
    oauth.blueprint,
    admin.blueprint,
    email.blueprint,
    mfa.blueprint,
    passkeys.blueprint,
    reauth.blueprint,
)
