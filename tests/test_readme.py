"""The README's shell walkthroughs run in order: no command uses a session it ended."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def _commands(text: str) -> list[str]:
    """Return the README's shell commands in order, continuation lines joined."""
    commands: list[str] = []
    for block in _BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                commands.append(line.strip())
    return commands


def test_curl_walkthroughs_use_a_cookie_jar_only_while_its_session_is_live() -> None:
    session_of: dict[str, int] = {}  # cookie jar -> the session its cookie names
    live: set[int] = set()
    new_session = itertools.count()
    for command in _commands((ROOT / "README.md").read_text()):
        if command.startswith("cp "):
            _, source, target = command.split()[:3]
            session_of[target] = session_of[source]
            continue
        if not command.startswith("curl"):
            continue
        call, _, comment = command.partition(" # ")
        logs_in = "-X POST" in call and re.search(r"/v1/sessions\b(?!/)", call)
        reads = re.search(r"-b (\S+)", call)
        if reads and not logs_in:
            jar = reads.group(1)
            refused = "not_authenticated" in comment
            assert (session_of.get(jar) in live) != refused, f"{jar}'s session: {call}"
        writes = re.search(r"-c (\S+)", call)
        if writes and logs_in:
            session_of[writes.group(1)] = next(new_session)
            live.add(session_of[writes.group(1)])
        elif reads and "-X DELETE" in call and "/v1/sessions/current" in call:
            live.discard(session_of[reads.group(1)])
    assert session_of, "the README has no cookie walkthrough any more: drop this test"
