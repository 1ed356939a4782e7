"""the secret key each stored HMAC and sealed secret was made under

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# What can outlive a secret-key rotation unused: `keystile secret-keys status` counts
# them by the key they are under, so the operator knows what a fallback still serves.
_TABLES = ("api_keys", "oauth_clients", "mfa_recovery_codes", "mfa_totp")


def upgrade() -> None:
    for table in _TABLES:
        # NULL: made before keystile recorded the key. A nullable column without a default
        # changes only the catalogue; NOT VALID checks every write from now on without
        # scanning the table under its lock (every existing row is NULL anyway).
        op.execute(f"ALTER TABLE {table} ADD COLUMN secret_key_id text")
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_secret_key_id_check "
            "CHECK (secret_key_id ~ '^[0-9a-f]{16}$') NOT VALID"
        )


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN secret_key_id")
