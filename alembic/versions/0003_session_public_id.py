"""sessions.public_id: the id a user sees and revokes, unrelated to the secret

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Random, not derived from the cookie's secret id or its stored hash: showing it
    # in a page or a URL reveals nothing that helps forge or find a session cookie.
    op.execute("ALTER TABLE sessions ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid()")
    # DELETE /v1/sessions/{id} revokes by public id (scoped to the caller's user id).
    op.execute("CREATE UNIQUE INDEX sessions_public_id_key ON sessions (public_id)")


def downgrade() -> None:
    op.execute("DROP INDEX sessions_public_id_key")
    op.execute("ALTER TABLE sessions DROP COLUMN public_id")
