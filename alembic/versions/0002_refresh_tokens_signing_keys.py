"""refresh tokens (in families) and signing keys

Revision ID: 0002
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per password grant. Revoking a family is one write to this row, and every
    # rotation checks it, so a successor inserted while the family is being revoked is
    # dead on arrival (a per-token UPDATE could miss a row not yet committed).
    op.execute(
        """
        CREATE TABLE refresh_token_families (
            id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            scope          text NOT NULL CHECK (length(scope) <= 1024),
            created_at     timestamptz NOT NULL DEFAULT now(),
            expires_at     timestamptz NOT NULL,
            revoked_at     timestamptz,
            revoked_reason text
        )
        """
    )
    # "Revoke every family of the user" (log out everywhere, password change, disable).
    op.execute(
        "CREATE INDEX refresh_token_families_user_live_idx ON refresh_token_families (user_id) "
        "WHERE revoked_at IS NULL"
    )
    op.execute(
        """
        CREATE TABLE refresh_tokens (
            token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
            family_id   uuid NOT NULL REFERENCES refresh_token_families (id) ON DELETE CASCADE,
            parent_hash bytea CHECK (length(parent_hash) = 32),
            issued_at   timestamptz NOT NULL DEFAULT now(),
            used_at     timestamptz,
            revoked_at  timestamptz,
            expires_at  timestamptz NOT NULL
        )
        """
    )
    # A token has at most one successor: the schema itself forbids a second branch (S16).
    op.execute(
        "CREATE UNIQUE INDEX refresh_tokens_parent_key ON refresh_tokens (parent_hash) "
        "WHERE parent_hash IS NOT NULL"
    )
    op.execute("CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id)")
    op.execute("CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at)")

    op.execute(
        """
        CREATE TABLE signing_keys (
            kid                text PRIMARY KEY CHECK (length(kid) <= 64),
            alg                text NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
            public_jwk         jsonb NOT NULL,
            private_key        bytea NOT NULL,
            secret_fingerprint bytea NOT NULL CHECK (length(secret_fingerprint) = 16),
            created_at         timestamptz NOT NULL DEFAULT now(),
            not_before         timestamptz NOT NULL,
            retired_at         timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX signing_keys_fingerprint_idx ON signing_keys (secret_fingerprint, not_before)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE signing_keys")
    op.execute("DROP TABLE refresh_tokens")
    op.execute("DROP TABLE refresh_token_families")
