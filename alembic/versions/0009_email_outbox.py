"""email verification state, single-use link tokens, and the mail outbox

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN email_verified_at timestamptz")

    # Tokens sent in links (S34): only the SHA-256 is kept. `email` is the address the
    # token is about (the one to verify, the new one, or the old one to restore), and
    # `password_changed_at` the user's at issue: a password change voids the token.
    op.execute(
        """
        CREATE TABLE email_tokens (
            token_hash          bytea PRIMARY KEY CHECK (length(token_hash) = 32),
            user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            purpose             text NOT NULL CHECK (purpose IN
                                    ('verify_email', 'reset_password', 'change_email',
                                     'undo_email_change')),
            email               text NOT NULL CHECK (length(email) <= 320),
            password_changed_at timestamptz NOT NULL,
            created_at          timestamptz NOT NULL DEFAULT now(),
            expires_at          timestamptz NOT NULL,
            used_at             timestamptz
        )
        """
    )
    # A new token of a purpose replaces the user's older ones of that purpose.
    op.execute("CREATE INDEX email_tokens_user_purpose_idx ON email_tokens (user_id, purpose)")
    op.execute("CREATE INDEX email_tokens_expires_at_idx ON email_tokens (expires_at)")

    # The transactional outbox: a row is written in the transaction of the change that
    # causes the mail, and every worker's sender claims due rows (FOR UPDATE SKIP LOCKED).
    # `context` (the template's values, links included) is sealed under the secret key
    # and dropped once the message is sent or dead.
    op.execute(
        """
        CREATE TABLE outbox (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            created_at      timestamptz NOT NULL DEFAULT now(),
            kind            text NOT NULL CHECK (length(kind) <= 64),
            user_id         uuid REFERENCES users (id) ON DELETE SET NULL,
            recipient       text NOT NULL CHECK (length(recipient) <= 320),
            context         text,
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            claim_id        uuid,
            claimed_until   timestamptz,
            sent_at         timestamptz,
            dead_at         timestamptz,
            last_error      text CHECK (length(last_error) <= 500)
        )
        """
    )
    # Only unsent rows are indexed: the senders' claim and the oldest-unsent metric
    # read them, and the index stays as small as the queue.
    op.execute(
        "CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) "
        "WHERE sent_at IS NULL AND dead_at IS NULL"
    )
    op.execute(
        "CREATE INDEX outbox_unsent_created_idx ON outbox (created_at) "
        "WHERE sent_at IS NULL AND dead_at IS NULL"
    )
    op.execute("CREATE INDEX outbox_created_at_idx ON outbox (created_at)")


def downgrade() -> None:
    op.execute("DROP TABLE outbox")
    op.execute("DROP TABLE email_tokens")
    op.execute("ALTER TABLE users DROP COLUMN email_verified_at")
