"""users, sessions and audit_events

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            email               text NOT NULL CHECK (length(email) <= 320),
            password_hash       text NOT NULL,
            password_changed_at timestamptz NOT NULL DEFAULT now(),
            token_epoch         integer NOT NULL DEFAULT 0,
            disabled_at         timestamptz,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Login looks users up by email, case-insensitively: one unique index serves both.
    op.execute("CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email))")

    op.execute(
        """
        CREATE TABLE sessions (
            id_hash      bytea PRIMARY KEY CHECK (length(id_hash) = 32),
            user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at   timestamptz NOT NULL DEFAULT now(),
            last_seen_at timestamptz NOT NULL DEFAULT now(),
            expires_at   timestamptz NOT NULL,
            revoked_at   timestamptz,
            user_agent   text NOT NULL DEFAULT '' CHECK (length(user_agent) <= 256),
            ip           text NOT NULL DEFAULT '' CHECK (length(ip) <= 64)
        )
        """
    )
    # "My sessions" and "end all my sessions" read live sessions by user.
    op.execute(
        "CREATE INDEX sessions_user_live_idx ON sessions (user_id, created_at DESC) "
        "WHERE revoked_at IS NULL"
    )
    op.execute("CREATE INDEX sessions_expires_at_idx ON sessions (expires_at)")

    op.execute(
        """
        CREATE TABLE audit_events (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT now(),
            kind       text NOT NULL,
            user_id    uuid,
            ip         text NOT NULL DEFAULT '',
            user_agent text NOT NULL DEFAULT '',
            detail     jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute("CREATE INDEX audit_events_at_idx ON audit_events (at)")
    op.execute("CREATE INDEX audit_events_user_at_idx ON audit_events (user_id, at DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE audit_events")
    op.execute("DROP TABLE sessions")
    op.execute("DROP TABLE users")
