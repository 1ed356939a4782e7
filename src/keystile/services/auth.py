"""Registration and password login."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import KW_ONLY, dataclass
from uuid import UUID

from keystile import metrics
from keystile.errors import (
    Conflict,
    DependencyUnavailable,
    InvalidCredentials,
    InvalidInput,
    KeystileError,
    LimitStatus,
    Overloaded,
    RateLimited,
)
from keystile.rates import Action
from keystile.repositories.audit import AuditEntry, AuditLog, BufferedAuditLog
from keystile.repositories.users import User, UserRepository
from keystile.services.account_hooks import AccountHooks
from keystile.services.account_security import AccountSecurity
from keystile.services.credentials import CredentialCache
from keystile.services.login_gate import LoginAdmission, LoginCheck, LoginGate
from keystile.services.login_throttle import LoginThrottle
from keystile.services.password_policy import PasswordPolicy
from keystile.services.passwords import HashTicket, PasswordHasher
from keystile.services.sessions import SessionService
from keystile.services.tokens import SecondFactorGate
from keystile.services.types import Authenticated, ClientInfo, Principal
from keystile.stores.redis_batch import RedisBatch

__all__ = ["AuthService", "Authenticated", "LoginAdmission", "SessionLogin"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionLogin:
    """A started cookie session."""

    user: User
    session_id: str
    limits: LimitStatus | None


@dataclass(frozen=True, slots=True)
class AuthService:
    """Register users and check their passwords."""

    users: UserRepository
    sessions: SessionService
    hasher: PasswordHasher
    policy: PasswordPolicy
    audit: AuditLog
    credentials: CredentialCache
    throttle: LoginThrottle
    _: KW_ONLY
    gate: LoginGate
    failures: BufferedAuditLog
    security: AccountSecurity
    hooks: AccountHooks | None = None
    second_factor: SecondFactorGate | None = None
    writes: RedisBatch | None = None  # a login's deferrable Redis writes: one round trip

    async def register(self, email: str, password: str, client: ClientInfo) -> None:
        """Create an account, or do nothing if the email is taken.

        Both cases cost one hash and return the same way, so the answer does not
        tell a caller which emails have accounts (S6).
        """
        password = self.policy.check_new(password)
        password_hash = await self.hasher.hash(password)
        user = await self.users.insert_user(
            email,
            password_hash,
            then=self.hooks.registered_in_transaction if self.hooks else None,
        )
        if user is None:
            await self.audit.record(
                "register_existing_email", ip=client.ip, user_agent=client.user_agent
            )
            return
        await self.audit.record(
            "register", user_id=user.id, ip=client.ip, user_agent=client.user_agent
        )

    async def admit_login(
        self, email: str, password: str, client: ClientInfo, *, action: Action
    ) -> LoginAdmission:
        """Run a login's gate and hash admission ahead of its handler (`web.login_refusal`).

        Raises `Overloaded` (counted as an overloaded login) when a cold login is refused
        for hash capacity, and `InvalidInput` for a password no login could have, before
        anything is charged. Anything else the gate refuses with comes back in the
        admission: its limits are spent, so the handler must not ask again.
        """
        self.policy.check_length(password)
        try:
            check = await self.gate.check(action, email, client)
        except KeystileError as exc:
            return LoginAdmission(email, exc)
        if not check.cold:
            return LoginAdmission(email, check)
        try:
            ticket = self.hasher.admit(check.attempts)
        except Overloaded:
            metrics.LOGINS.labels("overloaded").inc()
            raise
        return LoginAdmission(email, check, ticket)

    async def authenticate(
        self,
        email: str,
        password: str,
        client: ClientInfo,
        *,
        action: Action = Action.LOGIN,
        admission: LoginAdmission | None = None,
    ) -> Authenticated:
        """Return the user whose credentials these are, or raise `InvalidCredentials`.

        `action`'s rate limits are charged first, with the failed-login backoff and the
        credential-cache read, in one Redis call (`LoginGate`). A login that needs a hash
        is then admitted by its expected wait or refused with `Overloaded` (S5) before
        any PostgreSQL work; a warm login (a recent success cached) needs no hash and is
        never refused for hash capacity. Unknown and disabled users cost a dummy
        verification, so every failure takes the same time and gives the same error
        (S6). Legacy and weaker hashes are replaced by argon2id on success (S4).
        `admission` is the gate's and the hash admission's decision already made for
        this login (`admit_login`), for `email` only.
        """
        outcome = "error"
        if admission is not None and admission.email != email:
            raise ValueError("the admission was made for another login")
        try:
            found, outcome = await self._check_credentials(
                email, password, client, action, admission
            )
        except InvalidInput:
            outcome = "rejected"
            raise
        except Overloaded:
            outcome = "overloaded"
            raise
        except RateLimited:
            outcome = "throttled"
            raise
        except DependencyUnavailable:
            outcome = "unavailable"
            raise
        finally:
            metrics.LOGINS.labels(outcome).inc()
        if isinstance(found, LoginCheck):
            raise InvalidCredentials().with_limits(found.limits)
        return found

    async def _check_credentials(
        self,
        email: str,
        password: str,
        client: ClientInfo,
        action: Action,
        admission: LoginAdmission | None,
    ) -> tuple[Authenticated | LoginCheck, str]:
        # Returns the result (the gate's check if the credentials are wrong) and the outcome.
        password = self.policy.check_length(password)
        if admission is None:
            check = await self.gate.check(action, email, client)
            ticket = self.hasher.admit(check.attempts) if check.cold else None
        elif isinstance(admission.gate, KeystileError):
            raise admission.gate
        else:
            check, ticket = admission.gate, admission.ticket
        # The cache fills, the credential entry, the known-client mark and the new-device
        # marks go to Redis together: with the marks' question, or when the block ends.
        async with self.writes.collecting() if self.writes else contextlib.nullcontext():
            return await self._verify(email, password, client, check, ticket)

    async def _verify(
        self,
        email: str,
        password: str,
        client: ClientInfo,
        check: LoginCheck,
        ticket: HashTicket | None,
    ) -> tuple[Authenticated | LoginCheck, str]:
        with ticket or contextlib.nullcontext():
            user = await self.users.select_user_by_email(email, shared=check.user)
            if user is None or not user.is_active:
                await self.credentials.verify_dummy(password, ticket=ticket)
                await self._failed(check, client, user, reason="account")
                return check, "unknown_account" if user is None else "disabled_account"
            if not await self.credentials.verify(
                check.account,
                user.password_hash,
                password,
                prefetched=check.credential,
                ticket=ticket,
            ):
                await self._failed(check, client, user)
                return check, "wrong_password"
        await self.gate.succeeded(check, client)
        if self.hooks is not None:
            # The gate already knows whether this address has logged in to the account
            # before: a new-device notice costs nothing for a known one.
            await self.hooks.authenticated(user, client, known_client=check.known_client)
        if self.hasher.needs_rehash(user.password_hash):
            user = await self._rehash(user, password)
        return Authenticated(user, check.limits), "success"

    async def _failed(
        self, check: LoginCheck, client: ClientInfo, user: User | None, **detail: str
    ) -> None:
        user_id = user.id if user else None
        # Nothing else commits with a failure: its event goes out in the next batch.
        self.failures.record_later(
            "login_failed", user_id=user_id, ip=client.ip, user_agent=client.user_agent, **detail
        )
        await self.throttle.failed(check.account, client, user_id)

    async def login(self, email: str, password: str, client: ClientInfo) -> SessionLogin:
        """Check the credentials and start a cookie session (session + audit: one statement)."""
        found = await self.authenticate(email, password, client)
        if self.second_factor is not None:
            # A user with a factor gets an mfa_token, no session (S42).
            await self.second_factor.require(found.user, client, mode="session")
        return await self.start_session(found.user, client, amr=("pwd",), limits=found.limits)

    async def start_session(
        self,
        user: User,
        client: ClientInfo,
        *,
        amr: tuple[str, ...],
        limits: LimitStatus | None = None,
        proved: AuditEntry | None = None,
    ) -> SessionLogin:
        """Start a cookie session for a user who just authenticated as `amr` says.

        `proved`: the event of the second step that completed the login (`SecondStep`),
        committed with the session and its `login` event, in one statement.
        """
        via = {"via": "session"} if amr == ("pwd",) else {"via": "session", "amr": list(amr)}
        login = AuditEntry("login", user.id, client.ip, client.user_agent, via)
        session_id = await self.sessions.create(
            user, client, audit=(login,) if proved is None else (proved, login), amr=amr
        )
        return SessionLogin(user, session_id, limits)

    async def change_password(
        self,
        principal: Principal,
        current_password: str,
        new_password: str,
        client: ClientInfo,
    ) -> None:
        """Replace the password of the caller; it must prove the current one (S3).

        Every other session and every refresh-token family ends, and the token epoch
        moves on, so access tokens issued before now stop working on every worker
        (S3, S17). The calling cookie session survives; a bearer caller must log in again.
        """
        user = await self.security.prove_password(
            principal, current_password, client, failure="password_change_failed"
        )
        new_hash = await self.security.hash_new_password(new_password)
        if (
            await self.users.update_password_hash(
                user.id,
                user.password_hash,
                new_hash,
                changed=True,
                then=self.hooks.password_changed_in_transaction if self.hooks else None,
            )
            is None
        ):
            raise Conflict("The password was changed by another request; try again.")
        await self.security.end_logins(
            user.id,
            client,
            reason="password_change",
            event="password_changed",
            keep=principal.session_id_hash,
        )

    async def logout_everywhere(self, principal: Principal, client: ClientInfo) -> None:
        """End every session, refresh-token family and access token of the caller (S17)."""
        await self.users.bump_token_epoch(principal.user_id)
        await self.security.end_logins(principal.user_id, client, reason="logout_everywhere")

    async def logout(self, principal: Principal, client: ClientInfo) -> None:
        """End the caller's current session (S9) and record it."""
        if principal.session_id_hash is not None:
            await self.sessions.end(principal.session_id_hash)
        await self.audit.record(
            "session_revoked",
            user_id=principal.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            reason="logout",
        )

    async def revoke_session(
        self, principal: Principal, public_id: UUID, client: ClientInfo
    ) -> bool:
        """End one of the caller's sessions by its public id; return True if it was this one.

        `NotFound` for a session that is not the caller's, as `SessionService` says.
        """
        was_current = await self.sessions.end_by_public_id(principal, public_id)
        await self.audit.record(
            "session_revoked",
            user_id=principal.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            reason="revoked",
            current=was_current,
        )
        return was_current

    async def _rehash(self, user: User, password: str) -> User:
        # Upgrading the hash is best effort: a concurrent writer wins and we keep the old one,
        # and while hashing is at capacity it waits for a later login.
        try:
            ticket: HashTicket = self.hasher.admit()
        except Overloaded:
            return user
        new_hash = await self.hasher.hash(password, ticket=ticket)
        updated = await self.users.update_password_hash(
            user.id, user.password_hash, new_hash, changed=False
        )
        if updated is not None:
            _log.info("password hash upgraded", extra={"user_id": str(user.id)})
            return updated
        return user
