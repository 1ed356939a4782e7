"""second factors: TOTP, recovery codes, passkeys, one-time challenges, amr

Revision ID: 0011
Revises: 0010_machine_access
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010_machine_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Which factors a user has, on the user row: the login lookup (cached) already has
    # it, so a login without a factor costs nothing more.
    op.execute("ALTER TABLE users ADD COLUMN mfa_factors text[] NOT NULL DEFAULT '{}'")
    # How the session or token family was authenticated (RFC 8176 amr values).
    op.execute("ALTER TABLE sessions ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}'")
    op.execute("ALTER TABLE refresh_token_families ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}'")
    op.execute(
        """
        CREATE TABLE mfa_totp (
            user_id       uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
            secret_sealed bytea NOT NULL CHECK (length(secret_sealed) <= 200),
            confirmed_at  timestamptz,
            last_step     bigint NOT NULL DEFAULT 0,
            created_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE mfa_recovery_codes (
            user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            code_hmac bytea NOT NULL CHECK (length(code_hmac) = 32),
            used_at   timestamptz,
            PRIMARY KEY (user_id, code_hmac)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE webauthn_credentials (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            credential_id   bytea NOT NULL UNIQUE CHECK (length(credential_id) <= 1023),
            public_key      bytea NOT NULL CHECK (length(public_key) <= 2048),
            sign_count      bigint NOT NULL DEFAULT 0,
            backup_eligible boolean NOT NULL DEFAULT false,
            backed_up       boolean NOT NULL DEFAULT false,
            transports      text[] NOT NULL DEFAULT '{}',
            name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
            created_at      timestamptz NOT NULL DEFAULT now(),
            last_used_at    timestamptz
        )
        """
    )
    op.execute("CREATE INDEX webauthn_credentials_user_idx ON webauthn_credentials (user_id)")
    # One-time challenges (mfa tokens, WebAuthn challenges) while Redis is away.
    op.execute(
        """
        CREATE TABLE auth_challenges (
            key_hash   bytea PRIMARY KEY,
            value      text NOT NULL,
            expires_at timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX auth_challenges_expiry_idx ON auth_challenges (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE auth_challenges")
    op.execute("DROP TABLE webauthn_credentials")
    op.execute("DROP TABLE mfa_recovery_codes")
    op.execute("DROP TABLE mfa_totp")
    op.execute("ALTER TABLE refresh_token_families DROP COLUMN amr")
    op.execute("ALTER TABLE sessions DROP COLUMN amr")
    op.execute("ALTER TABLE users DROP COLUMN mfa_factors")
