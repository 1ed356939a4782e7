"""The admin API under /v1/admin: users, their sessions and roles, OAuth clients (S45).

Every route needs the `admin` role and a password authentication within
`reauth_max_age_seconds` (`requires_admin`); API keys and client-credentials tokens
never qualify. Every change is audited with the acting admin's id.
"""

from __future__ import annotations

from uuid import UUID

from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from keystile.repositories.user_admin import UserFilter
from keystile.web.auth import get_principal, requires_admin, requires_auth
from keystile.web.context import client_info, services
from keystile.web.machine_schemas import (
    AdminSessionResponse,
    AdminUserDetail,
    AdminUserListQuery,
    AdminUserListResponse,
    AdminUserResponse,
    ApiKeyResponse,
    AuditEventResponse,
    ClientCreatedResponse,
    ClientCreateRequest,
    ClientListQuery,
    ClientListResponse,
    ClientResponse,
    RolesRequest,
)

blueprint = Blueprint("admin", __name__)


@blueprint.get("/v1/admin/users")
@requires_auth()
@requires_admin
@validate_querystring(AdminUserListQuery)
@validate_response(AdminUserListResponse)
async def list_users(query_args: AdminUserListQuery) -> AdminUserListResponse:
    """List users oldest first, `limit` at a time; pass `next_cursor` back as `cursor`.

    Filters: `email_prefix` (case-insensitive), `state` (active | disabled), `role`.
    """
    where = UserFilter(
        email_prefix=query_args.email_prefix,
        disabled=None if query_args.state is None else query_args.state == "disabled",
        role=query_args.role,
    )
    page = await services().machine.administration.list_users(
        where, query_args.cursor, query_args.limit
    )
    return AdminUserListResponse(
        items=[AdminUserResponse.model_validate(user) for user in page.users],
        next_cursor=page.next_cursor,
    )


@blueprint.get("/v1/admin/users/<uuid:user_id>")
@requires_auth()
@requires_admin
@validate_response(AdminUserDetail)
async def show_user(user_id: UUID) -> AdminUserDetail:
    """Show one user: live sessions, API keys, second factors, recent events."""
    detail = await services().machine.administration.show_user(user_id)
    return AdminUserDetail(
        **AdminUserResponse.model_validate(detail.user).model_dump(),
        sessions=[
            AdminSessionResponse(
                id=view.public_id,
                created_at=view.created_at,
                last_seen_at=view.last_seen_at,
                expires_at=view.expires_at,
                device=view.device,
                ip=view.ip,
            )
            for view in detail.sessions
        ],
        api_keys=[ApiKeyResponse.model_validate(record) for record in detail.api_keys],
        factors=await services().factors.factors_of(user_id),
        recent_events=[AuditEventResponse.model_validate(event) for event in detail.events],
    )


@blueprint.post("/v1/admin/users/<uuid:user_id>/disable")
@requires_auth()
@requires_admin
async def disable_user(user_id: UUID) -> tuple[str, int]:
    """Disable a user: sessions, tokens and API keys end. 409 `last_admin` for the last admin."""
    await services().machine.administration.disable(get_principal(), user_id, client_info())
    return "", 204


@blueprint.post("/v1/admin/users/<uuid:user_id>/enable")
@requires_auth()
@requires_admin
async def enable_user(user_id: UUID) -> tuple[str, int]:
    """Let a disabled user log in again (its API keys stay revoked)."""
    await services().machine.administration.enable(get_principal(), user_id, client_info())
    return "", 204


@blueprint.post("/v1/admin/users/<uuid:user_id>/reset-factors")
@requires_auth()
@requires_admin
async def reset_factors(user_id: UUID) -> tuple[str, int]:
    """Remove the user's second factors (a lost phone): audited, and the user is told by mail."""
    admin = get_principal()
    await services().factors.reset(user_id, actor=f"admin:{admin.user_id}", client=client_info())
    return "", 204


@blueprint.post("/v1/admin/users/<uuid:user_id>/logout")
@requires_auth()
@requires_admin
async def logout_user(user_id: UUID) -> tuple[str, int]:
    """End every session, refresh token and access token of the user (not its API keys)."""
    await services().machine.administration.logout(get_principal(), user_id, client_info())
    return "", 204


@blueprint.put("/v1/admin/users/<uuid:user_id>/roles")
@requires_auth()
@requires_admin
@validate_request(RolesRequest)
@validate_response(AdminUserResponse)
async def set_roles(user_id: UUID, data: RolesRequest) -> AdminUserResponse:
    """Replace the user's roles (`admin` and `extra_roles`). 409 `last_admin` protects."""
    user = await services().machine.administration.set_roles(
        get_principal(), user_id, data.roles, client_info()
    )
    return AdminUserResponse.model_validate(user)


@blueprint.get("/v1/admin/clients")
@requires_auth()
@requires_admin
@validate_querystring(ClientListQuery)
@validate_response(ClientListResponse)
async def list_clients(query_args: ClientListQuery) -> ClientListResponse:
    """List OAuth clients oldest first, `limit` at a time; pass `next_cursor` back as `cursor`.

    Never their secrets. A client registered while you page is appended at the end.
    """
    page = await services().machine.clients.list_clients(query_args.cursor, query_args.limit)
    return ClientListResponse(
        clients=[
            ClientResponse(
                client_id=record.id,
                name=record.name,
                scopes=list(record.scopes),
                audience=record.audience,
                created_at=record.created_at,
            )
            for record in page.clients
        ],
        next_cursor=page.next_cursor,
    )


@blueprint.post("/v1/admin/clients")
@requires_auth()
@requires_admin
@validate_request(ClientCreateRequest)
@validate_response(ClientCreatedResponse, 201)
async def create_client(data: ClientCreateRequest) -> tuple[ClientCreatedResponse, int]:
    """Register a client for the client credentials grant; the secret is shown this once."""
    created = await services().machine.clients.create(
        data.name,
        data.scopes,
        data.audience,
        created_by=get_principal().user_id,
        client=client_info(),
    )
    record = created.record
    return (
        ClientCreatedResponse(
            client_id=record.id,
            client_secret=created.secret,
            name=record.name,
            scopes=list(record.scopes),
            audience=record.audience,
            created_at=record.created_at,
        ),
        201,
    )


@blueprint.delete("/v1/admin/clients/<uuid:client_id>")
@requires_auth()
@requires_admin
async def delete_client(client_id: UUID) -> tuple[str, int]:
    """Delete a client; its tokens are refused on every worker within seconds."""
    await services().machine.clients.delete(
        client_id, deleted_by=get_principal().user_id, client=client_info()
    )
    return "", 204
