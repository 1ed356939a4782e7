"""The `login-cold-totp` scenario: a cold password login followed by a TOTP code.

Issue 15: "a login with TOTP adds no hash". Users `bench-totp-<i>@example.com` are
seeded beside the password-only ones, with the bench password's hash and a confirmed
authenticator app: the secret is sealed with keystile's own `SecretBox` under the
server's secret key, bound to each user's id, exactly as `FactorCodes` seals it. They
share one TOTP secret, so a code depends only on the 30-second step: before each
round the harness writes the codes of the steps the round can span, and
`lua/login_totp.lua` sends the password step, then the mfa_token with the code of now.
Each user logs in once (the step is then used up for that user, and the password
would be warm). The check: 2xx/s (completed logins) >= 0.9 x login-cold's.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from uuid import UUID

import asyncpg
import pyotp

from bench.measure import Arm, Measurement, progress
from bench.scenarios import NOT_YET, Target, UserCursor
from bench.seed import PASSWORD
from bench.wrk import WrkResult
from keystile.services.keys import SecretBox

__all__ = [
    "TOTP_SECRET",
    "seed_totp_users",
    "totp_email",
    "totp_login_arm",
    "totp_user_count",
    "write_totp_codes",
]

# One well-known secret for every bench TOTP user (the bench's password is well known too).
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # noqa: S105
_STEP = 30
_CHUNK = 5_000


def totp_email(index: int) -> str:
    """Return the email of seeded TOTP user `index` (login_totp.lua builds the same)."""
    return f"bench-totp-{index}@example.com"


def totp_user_count(logins_per_s: float, seconds: float) -> int:
    """Return how many TOTP users `seconds` of logins at `logins_per_s` need, with room."""
    return max(200, math.ceil(2 * logins_per_s * seconds))


def seed_totp_users(database_url: str, count: int, password_hash: str, secret_key: bytes) -> None:
    """Insert `count` TOTP users: the password hash, a confirmed app, no recovery codes."""
    box = SecretBox(secret_key, purpose="totp-secret")  # services/mfa_codes.py's sealing

    async def _seed() -> None:
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            await connection.execute(
                "DELETE FROM users WHERE email LIKE 'bench-totp-%@example.com'", timeout=120
            )
            for start in range(0, count, _CHUNK):
                stop = min(start + _CHUNK, count)
                rows = await connection.fetch(
                    "INSERT INTO users (email, password_hash, mfa_factors) "
                    "SELECT 'bench-totp-' || i || '@example.com', $3, '{totp}' "
                    "FROM generate_series($1::int, $2::int - 1) AS i RETURNING id",
                    start,
                    stop,
                    password_hash,
                    timeout=120,
                )
                records = []
                for row in rows:
                    user_id: UUID = row["id"]
                    records.append((user_id, box.seal(TOTP_SECRET.encode(), user_id.bytes)))
                await connection.executemany(
                    "INSERT INTO mfa_totp (user_id, secret_sealed, confirmed_at) "
                    "VALUES ($1, $2, now())",
                    records,
                    timeout=120,
                )
            await connection.execute("ANALYZE users", timeout=120)
        finally:
            await connection.close()

    started = time.monotonic()
    asyncio.run(_seed())
    progress(f"seeded {count:,} TOTP users in {time.monotonic() - started:.1f} s")


def write_totp_codes(path: Path, seconds: float) -> None:
    """Write "<step> <code>" for every 30-second step from now to `seconds` ahead."""
    totp = pyotp.TOTP(TOTP_SECRET)
    now = int(time.time()) // _STEP
    steps = range(now - 1, now + math.ceil(seconds / _STEP) + 2)
    path.write_text("".join(f"{step} {totp.generate_otp(step)}\n" for step in steps))


def totp_login_arm(
    target: Target, connections: int, count: int, password_hash: str, round_s: float
) -> Arm | Measurement:
    """Seed `count` TOTP users for `target` and return the `login-cold-totp` arm."""
    scenario = "login-cold-totp"
    if not target.has_tokens or not target.client.has_route("/v1/tokens/mfa"):
        return target.skip(scenario, f"POST /v1/tokens/mfa {NOT_YET} (404)")
    secret_key = target.server.env_value("KEYSTILE_SECRET_KEY")
    if secret_key is None:
        return target.skip(scenario, "the server's secret key is not known to the harness")
    seed_totp_users(
        target.server.env_value("KEYSTILE_DATABASE_URL") or "",
        count,
        password_hash,
        secret_key.encode(),
    )
    cursor = UserCursor(0, count)
    codes = target.work_dir / f"{target.name}-totp-codes.txt"
    write_totp_codes(codes, round_s + 60)

    def prepare() -> None:
        write_totp_codes(codes, round_s + 60)

    def run(duration_s: float) -> WrkResult:
        args = [
            "/v1/tokens",
            "/v1/tokens/mfa",
            str(cursor.position),
            str(cursor.remaining),
            PASSWORD,
            str(codes),
            str(target.options.wrk_threads),
            "retry-after",  # as login-cold's clients: they honour Retry-After
        ]
        result = target.start("login_totp.lua", args, connections, duration_s).result()
        cursor.advance(result.sent)
        return result

    return target.arm(
        scenario,
        run,
        note="POST /v1/tokens + POST /v1/tokens/mfa (latency per request, both steps)",
        prepare=prepare,
    )
