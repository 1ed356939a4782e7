"""catalog_products: the example extension in examples/catalog

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The primary key on sku serves both the detail lookup and the keyset-paged list.
    op.execute(
        """
        CREATE TABLE catalog_products (
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
