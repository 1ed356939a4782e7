"""re-authentication: when a session or token family last proved the user (auth_time)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL until the first re-authentication: the login itself (created_at) is the
    # auth_time. Nullable with no default, so adding the column rewrites nothing.
    op.execute("ALTER TABLE sessions ADD COLUMN auth_time timestamptz")
    op.execute("ALTER TABLE refresh_token_families ADD COLUMN auth_time timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE refresh_token_families DROP COLUMN auth_time")
    op.execute("ALTER TABLE sessions DROP COLUMN auth_time")
