"""The JSON API blueprints, under /v1."""

from quart import Blueprint

from keystile.web.api import email, me, sessions, tokens, users

__all__ = ["blueprints"]

blueprints: tuple[Blueprint, ...] = (
    users.blueprint,
    sessions.blueprint,
    me.blueprint,
    tokens.blueprint,
    email.blueprint,
)
