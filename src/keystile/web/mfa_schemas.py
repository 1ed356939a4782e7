"""Request and response bodies of the second-factor API (docs/mfa.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from keystile.web.schemas import Password, Scope

__all__ = [
    "MfaCompleteRequest",
    "MfaStatusResponse",
    "PasskeyCreatedResponse",
    "PasskeyListResponse",
    "PasskeyLoginOptionsRequest",
    "PasskeyLoginRequest",
    "PasskeyRegistrationRequest",
    "PasskeyRenameRequest",
    "PasskeyResponse",
    "ReauthPasskeyRequest",
    "ReauthRequest",
    "ReauthResponse",
    "RecoveryCodesResponse",
    "TotpCodeRequest",
    "TotpRemoveRequest",
    "TotpSetupResponse",
    "WebAuthnOptions",
]

TotpCode = Annotated[
    str,
    StringConstraints(min_length=6, max_length=8, pattern=r"^[0-9 ]+$"),
    Field(description="The 6-digit code the authenticator app shows.", examples=["123456"]),
]
RecoveryCode = Annotated[
    str,
    StringConstraints(min_length=10, max_length=20, pattern=r"^[A-Za-z0-9 -]+$"),
    Field(description="One of the recovery codes shown at enrollment.", examples=["abcde-fghjk"]),
]
MfaToken = Annotated[
    str,
    StringConstraints(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$"),
    Field(description="The mfa_token of the 401 mfa_required answer."),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TotpCodeRequest(_Request):
    code: TotpCode


class TotpRemoveRequest(_Request):
    """Without `code`, a recent login is needed, and the last factor cannot go."""

    code: TotpCode | None = None


class MfaCompleteRequest(_Request):
    """The second step: `mfa_token` and `code` or `recovery_code` (401 without either)."""

    mfa_token: MfaToken
    code: TotpCode | None = None
    recovery_code: RecoveryCode | None = None
    scope: Scope | None = Field(default=None, description="Ignored: the password step's applies.")


class TotpSetupResponse(BaseModel):
    secret: str = Field(description="Base32; type it into the app if the QR code cannot be read.")
    otpauth_uri: str
    qr_svg: str = Field(description="The otpauth URI as an inline SVG QR code.")


class RecoveryCodesResponse(BaseModel):
    recovery_codes: list[str] = Field(description="Shown once; each works once.")


class MfaStatusResponse(BaseModel):
    totp: bool
    totp_pending: bool
    passkeys: int
    recovery_codes_left: int
    recovery_codes_outdated: bool = Field(
        description="The codes were made under a previous secret key and stop working when "
        "the operator drops it: make new ones (POST /v1/me/mfa/recovery-codes)."
    )


PasskeyName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
]
LoginMode = Literal["session", "tokens"]


class WebAuthnOptions(BaseModel):
    """PublicKeyCredentialCreationOptions or RequestOptions as JSON (base64url bytes)."""

    model_config = ConfigDict(extra="allow")

    challenge: str


class PasskeyRegistrationRequest(_Request):
    """The `navigator.credentials.create()` result as JSON (base64url), and a name."""

    credential: dict[str, Any]
    name: PasskeyName | None = None


class PasskeyCreatedResponse(BaseModel):
    id: UUID
    name: str
    recovery_codes: list[str] = Field(
        default=[], description="Only with the account's first factor: shown once."
    )


class PasskeyResponse(BaseModel):
    id: UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None
    backed_up: bool


class PasskeyListResponse(BaseModel):
    passkeys: list[PasskeyResponse]


class PasskeyRenameRequest(_Request):
    name: PasskeyName


class PasskeyLoginOptionsRequest(_Request):
    """Without `mfa_token`: a passwordless login. With it: the second step of that login."""

    mfa_token: MfaToken | None = None
    mode: LoginMode = "session"


class PasskeyLoginRequest(_Request):
    credential: dict[str, Any]
    mode: LoginMode = "session"
    mfa_token: MfaToken | None = None
    scope: Scope | None = Field(default=None, description="Passwordless tokens only.")


class ReauthRequest(_Request):
    """Exactly one of `password`, `code` (TOTP) or `recovery_code`."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    password: Password | SkipJsonSchema[None] = None
    code: TotpCode | SkipJsonSchema[None] = None
    recovery_code: RecoveryCode | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReauthRequest:
        given = [v for v in (self.password, self.code, self.recovery_code) if v is not None]
        if len(given) != 1:
            raise ValueError("Send exactly one of password, code or recovery_code.")
        return self


class ReauthPasskeyRequest(_Request):
    """The `navigator.credentials.get()` result as JSON (base64url)."""

    credential: dict[str, Any]


class ReauthResponse(BaseModel):
    """The refreshed login; a bearer caller also gets a new access token (no refresh token)."""

    auth_time: datetime = Field(description="Now: when the caller last proved who they are.")
    amr: list[str] = Field(description="How: the login's methods plus the one just used.")
    access_token: str | None = Field(
        default=None, description="Bearer callers: a new access token of the same login."
    )
    token_type: str | None = Field(default=None, description="`Bearer` with `access_token`.")
    expires_in: int | None = Field(default=None, description="The access token's lifetime.")
    scope: str | None = Field(default=None, description="The access token's scopes.")
