"""Cold vs warm password-login throughput of a running keystile, over real HTTP.

    .venv/bin/keystile serve &                       # or `make run`
    .venv/bin/python scripts/login_throughput.py --users 200 --concurrency 8

Registers `--users` fresh accounts, then logs each in once (cold: every login pays
an argon2id verification) and `--warm-rounds` more times (warm: the credential
cache answers). Prints logins per second for both and their ratio; compare the cold
figure with the ceiling `keystile hash calibrate` prints for the same settings.
Refused logins (503 overloaded) are retried after Retry-After and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import httpx

PASSWORD = "correct horse battery staple"  # noqa: S105 - throwaway benchmark accounts


async def _post(client: httpx.AsyncClient, path: str, email: str, ok: int) -> int:
    """POST until it is not shed; return how many 503s it took."""
    shed = 0
    while True:
        response = await client.post(path, json={"email": email, "password": PASSWORD})
        if response.status_code == ok:
            return shed
        if response.status_code != 503:
            raise SystemExit(f"{path}: unexpected {response.status_code} {response.text}")
        shed += 1
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


async def _run(
    emails: Sequence[str], concurrency: int, action: Callable[[str], Awaitable[int]]
) -> tuple[float, int]:
    """Run `action` for each email with `concurrency` in flight; return (seconds, 503s)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for email in emails:
        queue.put_nowait(email)
    shed = 0

    async def worker() -> None:
        nonlocal shed
        while not queue.empty():
            shed += await action(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, shed


async def main(args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=args.base, limits=limits, timeout=60) as client:
        emails = [f"bench-{uuid.uuid4().hex}@example.com" for _ in range(args.users)]

        async def register(email: str) -> int:
            return await _post(client, "/v1/users", email, 202)

        async def log_in(email: str) -> int:
            client.cookies.clear()
            return await _post(client, "/v1/sessions", email, 201)

        await _run(emails, args.concurrency, register)
        cold_s, cold_shed = await _run(emails, args.concurrency, log_in)
        warm_s, warm_shed = await _run(emails * args.warm_rounds, args.concurrency, log_in)

    cold = len(emails) / cold_s
    warm = len(emails) * args.warm_rounds / warm_s
    sys.stdout.write(
        f"cold: {cold:8.1f} logins/s ({len(emails)} logins, {cold_shed} shed with 503)\n"
        f"warm: {warm:8.1f} logins/s ({len(emails) * args.warm_rounds} logins, "
        f"{warm_shed} shed with 503)\n"
        f"warm/cold: {warm / cold:.1f}x\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warm-rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
