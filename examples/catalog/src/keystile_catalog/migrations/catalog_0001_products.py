"""catalog_products: the catalogue's one table

Revision ID: catalog_0001
Revises:
Create Date: 2026-11-21

The catalogue's own history (version table `alembic_version_catalog`), run by
`keystile migrate` only where the extension is enabled. IF NOT EXISTS: deployments
migrated before the table moved out of keystile's own history already have it.
"""

from __future__ import annotations

from alembic import op

revision = "catalog_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The primary key on sku serves both the detail lookup and the keyset-paged list.
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS catalog_products (
            sku         text PRIMARY KEY CHECK (sku ~ '^[A-Za-z0-9_-]{1,64}$'),
            name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
            description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
            price_cents integer NOT NULL CHECK (price_cents >= 0),
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE catalog_products")
