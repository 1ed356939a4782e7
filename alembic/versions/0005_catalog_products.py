"""no-op: the catalogue table moved to the catalog extension's own migrations

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-21

This revision used to create `catalog_products` in every deployment. The example
extension (examples/catalog) now owns that table and its migration, which
`keystile migrate` runs only where the extension is enabled. The revision stays, as
a step that does nothing, so databases already past it keep a known history.
"""

from __future__ import annotations

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
