"""machine access: user roles, API keys, OAuth clients, admin listing indexes

Revision ID: 0010_machine_access
Revises: 0008
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0010_machine_access"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN roles text[] NOT NULL DEFAULT '{}'")
    # "Who is admin" (last-admin protection, the role filter) without a scan.
    op.execute("CREATE INDEX users_roles_idx ON users USING gin (roles)")
    # The admin listing pages by (created_at, id) and filters by email prefix.
    op.execute("CREATE INDEX users_created_id_idx ON users (created_at, id)")
    op.execute("CREATE INDEX users_email_prefix_idx ON users (lower(email) text_pattern_ops)")

    op.execute(
        """
        CREATE TABLE api_keys (
            id           text PRIMARY KEY CHECK (length(id) <= 32),
            user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
            secret_hmac  bytea NOT NULL CHECK (length(secret_hmac) = 32),
            scopes       text[] NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            expires_at   timestamptz NOT NULL,
            last_used_at timestamptz,
            revoked_at   timestamptz
        )
        """
    )
    # "My keys" and "revoke every key of the user" (disable).
    op.execute("CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at DESC)")

    op.execute(
        """
        CREATE TABLE oauth_clients (
            id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
            secret_hmac bytea NOT NULL CHECK (length(secret_hmac) = 32),
            scopes      text[] NOT NULL,
            audience    text CHECK (length(audience) <= 256),
            created_at  timestamptz NOT NULL DEFAULT now(),
            created_by  uuid REFERENCES users (id) ON DELETE SET NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE oauth_clients")
    op.execute("DROP TABLE api_keys")
    op.execute("DROP INDEX users_email_prefix_idx")
    op.execute("DROP INDEX users_created_id_idx")
    op.execute("DROP INDEX users_roles_idx")
    op.execute("ALTER TABLE users DROP COLUMN roles")
