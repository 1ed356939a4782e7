"""Service classes: plain Python, no web framework, collaborators passed in."""

from keystile.services.auth import AuthService
from keystile.services.credentials import CredentialCache
from keystile.services.password_policy import PasswordPolicy
from keystile.services.passwords import Argon2Parameters, PasswordHasher
from keystile.services.sessions import SessionService
from keystile.services.types import ClientInfo, Principal
from keystile.services.users import UserAdminService

__all__ = [
    "Argon2Parameters",
    "AuthService",
    "ClientInfo",
    "CredentialCache",
    "PasswordHasher",
    "PasswordPolicy",
    "Principal",
    "SessionService",
    "UserAdminService",
]
