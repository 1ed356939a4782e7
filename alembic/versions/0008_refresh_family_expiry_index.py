"""index refresh_token_families by expiry, for housekeeping

Revision ID: 0008
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Housekeeping deletes expired families oldest first; without this it would scan.
    op.execute(
        "CREATE INDEX refresh_token_families_expires_at_idx ON refresh_token_families (expires_at)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX refresh_token_families_expires_at_idx")
