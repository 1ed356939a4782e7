"""The caller's API keys: POST/GET /v1/me/api-keys, DELETE /v1/me/api-keys/{id}."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_request, validate_response

from keystile.web.auth import get_principal, requires_auth
from keystile.web.context import client_info, services
from keystile.web.machine_schemas import (
    ApiKeyCreatedResponse,
    ApiKeyCreateRequest,
    ApiKeyListResponse,
    ApiKeyResponse,
)
from keystile.web.openapi import may_fail, responds

blueprint = Blueprint("api_keys", __name__)


@blueprint.post("/v1/me/api-keys")
@may_fail(409)  # the per-user limit of live keys
@requires_auth()
@validate_request(ApiKeyCreateRequest)
@validate_response(ApiKeyCreatedResponse, 201)
async def create_api_key(data: ApiKeyCreateRequest) -> tuple[ApiKeyCreatedResponse, int]:
    """Create an API key; the answer holds the key, shown this once (S43).

    Its scopes must be among the caller's; it must expire within `api_key_max_days`.
    An API key cannot create keys.
    """
    created = await services().machine.api_keys.create(
        get_principal(), data.name, data.scopes, data.expires_in_days, client_info()
    )
    record = created.record
    return (
        ApiKeyCreatedResponse(
            id=record.id,
            key=created.key,
            name=record.name,
            scopes=list(record.scopes),
            expires_at=record.expires_at,
        ),
        201,
    )


@blueprint.get("/v1/me/api-keys")
@requires_auth()
@validate_response(ApiKeyListResponse)
async def list_api_keys() -> ApiKeyListResponse:
    """List the caller's unrevoked API keys (never the keys themselves)."""
    records = await services().machine.api_keys.list_keys(get_principal().user_id)
    return ApiKeyListResponse(
        api_keys=[ApiKeyResponse.model_validate(record) for record in records]
    )


@blueprint.delete("/v1/me/api-keys/<key_id>")
@responds(204, "The key is revoked on every worker.")
@requires_auth()
async def revoke_api_key(key_id: str) -> tuple[str, int]:
    """Revoke one of the caller's API keys; every worker refuses it within seconds."""
    await services().machine.api_keys.revoke(get_principal(), key_id[:32], client_info())
    return "", 204
