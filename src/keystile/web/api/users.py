"""POST /v1/users: self-registration."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_request, validate_response

from keystile.rates import Action
from keystile.web.context import client_info, services
from keystile.web.rate_limits import rate_limited
from keystile.web.schemas import AcceptedResponse, RegisterRequest

blueprint = Blueprint("users", __name__)


@blueprint.post("/v1/users")
@validate_request(RegisterRequest)
@validate_response(AcceptedResponse, 202)
@rate_limited(Action.REGISTER, account=lambda data: data.email)
async def register(data: RegisterRequest) -> tuple[AcceptedResponse, int]:
    """Register an account.

    The answer is the same whether or not the email already had an account (S6).
    """
    await services().auth.register(data.email, data.password, client_info())
    return AcceptedResponse(
        status="accepted",
        message="If this email was not registered yet, its account now exists. Log in to continue.",
    ), 202
