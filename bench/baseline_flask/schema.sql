-- The baseline's own table; everything else it reads is keystile's `users`.
CREATE TABLE IF NOT EXISTS baseline_token_blocklist (
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
