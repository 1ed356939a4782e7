"""an index for the client listings' keyset pages (created_at, id)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `keystile client list` and GET /v1/admin/clients page by (created_at, id), like
    # the user listing (users_created_id_idx): each page reads its rows from here
    # instead of sorting the table.
    op.execute("CREATE INDEX oauth_clients_created_id_idx ON oauth_clients (created_at, id)")


def downgrade() -> None:
    op.execute("DROP INDEX oauth_clients_created_id_idx")
