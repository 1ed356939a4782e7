"""The `keystile` command: serve, migrate, and account administration."""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keystile.errors import InvalidInput, KeystileError
from keystile.logs import configure_logging
from keystile.runtime import DatabaseUnreachable, migrate, project_root, runtime
from keystile.services.paging import MAX_PAGE_SIZE, decode_cursor
from keystile.services.passwords import MAX_STRETCH
from keystile.services.types import ClientInfo
from keystile.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from keystile.secret_keys import KeyUse

__all__ = ["main"]

_log = logging.getLogger("keystile")


def _serve(args: argparse.Namespace) -> int:
    from hypercorn.config import Config

    from keystile.secret_keys import read_secret_keys
    from keystile.serving import listen, serve

    overrides = {
        key: value
        for key, value in {"host": args.host, "port": args.port, "workers": args.workers}.items()
        if value is not None
    }
    settings = load_settings(**overrides)
    config_file = project_root() / "hypercorn.toml"
    config = Config.from_toml(config_file) if config_file.is_file() else Config()
    config.bind = [f"{settings.serving.host}:{settings.serving.port}"]
    config.workers = settings.serving.workers
    # Listen first: a busy port is reported before any server starts or anything is logged.
    sockets = listen(config, settings)
    with runtime(**overrides) as rt:
        # Each worker reads the keys too: a bad key file or fallback list is said here once,
        # as one line, instead of as every worker's traceback after "serving on".
        read_secret_keys(rt.settings)
        migrate(rt.settings)
        for line in rt.started:
            _log.info("started %s", line)
        # Another command's servers (an earlier `make run`): used, not started.
        for line in rt.joined:
            _log.info("using the running %s", line)
        _log.info(
            "keystile serving on http://%s:%d with %d worker(s); data in %s; Ctrl-C stops it",
            settings.serving.host,
            settings.serving.port,
            settings.serving.workers,
            rt.settings.serving.data_dir.resolve(),
        )
        return serve(config, rt.settings, sockets)


def _migrate(args: argparse.Namespace) -> int:
    with runtime() as rt:
        migrate(rt.settings, args.revision)
    _log.info("database is at revision %s", args.revision)
    return 0


def _with_services(action: Callable[[Any], Awaitable[int]]) -> int:
    from keystile.bootstrap import open_services

    async def _run(settings: Settings) -> int:
        async with open_services(_one_shot(settings)) as services:
            return await action(services)

    with runtime() as rt:
        migrate(rt.settings)
        return asyncio.run(_run(rt.settings))


def _one_shot(settings: Settings) -> Settings:
    """`settings` for a command: none of a worker's outbox sender and housekeeping loops.

    A command does its one piece of work; mail it queues is sent by the servers' senders.
    A command that sent mail itself would deliver (or, run with another secret key, mark
    dead) mail queued by the servers, and housekeeping would delete rows as it ran.
    """
    return settings.model_copy(
        update={
            "email": settings.email.model_copy(update={"outbox_sender_enabled": False}),
            "retention": settings.retention.model_copy(update={"housekeeping_interval_seconds": 0}),
        }
    )


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise SettingsError("passwords do not match")
    return first


def _user_create(args: argparse.Namespace) -> int:
    password = _read_password(args)

    async def action(services: Any) -> int:
        user = await services.admin.create_user(args.email, password)
        sys.stdout.write(f"created {user.email} ({user.id})\n")
        return 0

    return _with_services(action)


def _user_disable(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        user = await services.admin.disable_user(args.email)
        keys = await services.machine.api_keys.revoke_all(user.id)
        sys.stdout.write(
            f"disabled {user.email}; its sessions and tokens are ended, {keys} API key(s) revoked\n"
        )
        return 0

    return _with_services(action)


def _user_change_role(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        roles = services.machine.roles
        user = await (roles.grant if args.grant else roles.revoke)(args.email, args.role)
        sys.stdout.write(f"{user.email} now has the roles: {', '.join(user.roles) or '-'}\n")
        return 0

    return _with_services(action)


def _user_reset_factors(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        user = await services.users.select_user_by_email(args.email)
        if user is None:
            sys.stderr.write(f"no account has the email {args.email}\n")
            return 1
        removed = await services.factors.reset(user.id, actor="cli", client=ClientInfo())
        sys.stdout.write(
            f"removed {removed} second factor(s) and every recovery code of {user.email}\n"
        )
        return 0

    return _with_services(action)


def _client_create(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        created = await services.machine.clients.create(args.name, args.scope, args.audience)
        sys.stdout.write(
            f"client_id={created.record.id}\nclient_secret={created.secret}\n"
            "# the secret is shown this once; keystile keeps only an HMAC of it\n"
        )
        return 0

    return _with_services(action)


def _client_list(args: argparse.Namespace) -> int:
    if args.after:
        try:
            decode_cursor(args.after)
        except InvalidInput:
            raise SettingsError(
                "--after: not a cursor that `keystile client list` printed"
            ) from None

    async def action(services: Any) -> int:
        page = await services.machine.clients.list_clients(args.after, args.limit)
        for record in page.clients:
            sys.stdout.write(
                f"{record.id}\t{_printable(record.name)}\t{' '.join(record.scopes)}\t"
                f"{record.audience or '-'}\t{record.created_at:%Y-%m-%d}\n"
            )
        if page.next_cursor is not None:
            limit = "" if args.limit == MAX_PAGE_SIZE else f" --limit {args.limit}"
            sys.stderr.write(f"more: keystile client list{limit} --after {page.next_cursor}\n")
        return 0

    return _with_services(action)


def _client_delete(args: argparse.Namespace) -> int:
    from uuid import UUID

    try:
        client_id = UUID(args.client_id)
    except ValueError:
        raise SettingsError(f"{args.client_id}: not a client id (a UUID)") from None

    async def action(services: Any) -> int:
        await services.machine.clients.delete(client_id)
        sys.stdout.write(f"deleted client {client_id}; its tokens stop working within seconds\n")
        return 0

    return _with_services(action)


def _user_list(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        for user in await services.admin.list_users(args.limit, args.after):
            state = "disabled" if user.disabled_at else "active"
            sys.stdout.write(f"{user.email}\t{user.id}\t{state}\t{user.created_at:%Y-%m-%d}\n")
        return 0

    return _with_services(action)


def _user_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from keystile.services.user_import import UserImporter

    path: Path = args.file
    if not path.is_file():
        raise SettingsError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as counting:
        total = sum(1 for fields in csv.reader(counting) if fields)

    async def action(services: Any) -> int:
        importer = UserImporter(services.users, batch_size=args.batch_size)
        with (
            path.open(newline="", encoding="utf-8") as source,
            tqdm(total=total, unit="row", file=sys.stderr, disable=args.quiet) as bar,
        ):
            report = await importer.import_rows(_numbered(csv.reader(source)), bar.update)
        for row in report.refused:
            sys.stdout.write(f"refused line {row.line} ({row.email or '-'}): {row.reason}\n")
        sys.stdout.write(
            f"imported {report.imported}, already present {report.already_present}, "
            f"refused {len(report.refused)}\n"
        )
        return 1 if report.refused else 0

    return _with_services(action)


def _audit_tail(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        for event in await services.audit_admin.tail(args.n, args.user):
            who = event.email or (str(event.user_id) if event.user_id else "-")
            detail = json.dumps(event.detail, sort_keys=True) if event.detail else ""
            sys.stdout.write(
                f"{event.at.isoformat(timespec='seconds')}\t{event.kind}\t{who}\t"
                f"{event.ip or '-'}\t{_printable(event.user_agent) or '-'}\t{detail}\n"
            )
        return 0

    return _with_services(action)


def _numbered(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    for fields in reader:
        if fields:  # blank lines are not rows
            yield reader.line_num, fields  # type: ignore[attr-defined]


def _hash_calibrate(args: argparse.Namespace) -> int:
    from keystile.bootstrap import build_hasher
    from keystile.services.calibration import calibrate, measure_rate
    from keystile.settings import load_settings

    settings = load_settings()
    result = calibrate(
        args.target_ms,
        memory_kib=args.memory_kib or settings.hashing.memory_kib,
        parallelism=settings.hashing.parallelism,
    )
    chosen = result.parameters
    verdict = "" if result.within_target else " (over the target: OWASP's minimum is the floor)"
    hasher = build_hasher(settings)
    try:
        rate = asyncio.run(measure_rate(hasher, seconds=args.seconds))
    finally:
        hasher.close()
    current = hasher.parameters
    sys.stdout.write(
        f"target {args.target_ms:g} ms: m={chosen.memory_kib} KiB, t={chosen.time_cost}, "
        f"p={chosen.parallelism} takes {result.hash_ms:.0f} ms per hash{verdict}\n"
        f"in-process ceiling with the current settings (m={current.memory_kib} KiB, "
        f"t={current.time_cost}, p={current.parallelism}, {hasher.threads} hash threads): "
        f"{rate:.1f} verifications/s\n"
        f"{_admission_capacity(settings, rate, hasher.threads)}"
        f"\n# settings.toml\n"
        f"argon2_memory_kib = {chosen.memory_kib}\n"
        f"argon2_time_cost = {chosen.time_cost}\n"
        f"argon2_parallelism = {chosen.parallelism}\n"
        f"# or: KEYSTILE_ARGON2_MEMORY_KIB={chosen.memory_kib} "
        f"KEYSTILE_ARGON2_TIME_COST={chosen.time_cost} "
        f"KEYSTILE_ARGON2_PARALLELISM={chosen.parallelism}\n"
    )
    return 0


def _admission_capacity(settings: Settings, rate: float, threads: int) -> str:
    """Say what the login wait budget admits at the measured hash rate (per worker, total)."""
    budget_ms = settings.hashing.login_wait_budget_ms
    waiting = int(budget_ms / 1000 * rate)  # hashes the threads finish within the budget
    returning = int(budget_ms / 1000 * MAX_STRETCH * rate)  # logins refused before
    workers = settings.serving.workers
    return (
        f"cold-login capacity: {rate:.1f} logins/s per worker, {rate * workers:.1f}/s over "
        f"{workers} worker(s); login_wait_budget_ms = {budget_ms} admits "
        f"{threads} running + {waiting} waiting per worker ({(threads + waiting) * workers} "
        f"in all), up to {returning} waiting for logins that come back after a refusal; "
        f"past that, 503 with Retry-After\n"
    )


def _audit_prune(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        retention = timedelta(days=args.older_than) if args.older_than is not None else None
        deleted = await services.audit_admin.prune(retention)
        sys.stdout.write(f"deleted {deleted} audit event(s)\n")
        return 0

    return _with_services(action)


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _positive(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _page_size(text: str) -> int:
    value = _whole_number(text)
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_PAGE_SIZE}")
    return value


def _printable(text: str) -> str:
    # User agents come from clients: keep control characters off the operator's terminal.
    return "".join(char if char.isprintable() else "?" for char in text)


def _keys_rotate(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        settings = services.settings
        promote_after = (
            settings.tokens.signing_key_promote_after_seconds
            if args.promote_after is None
            else args.promote_after
        )
        if promote_after < settings.tokens.jwks_max_age_seconds:
            _log.warning(
                "promoting sooner than jwks_max_age_seconds (%ds): relying parties with a "
                "cached JWKS may refuse the first tokens of the new key",
                settings.tokens.jwks_max_age_seconds,
            )
        key, retiring = await services.key_ring.rotate(
            promote_after=timedelta(seconds=promote_after),
            retire_after=timedelta(seconds=settings.tokens.longest_access_token_seconds),
        )
        sys.stdout.write(
            f"added {key.kid} ({key.alg}), promoted at {key.not_before:%Y-%m-%dT%H:%M:%SZ}\n"
        )
        for kid in retiring:
            sys.stdout.write(
                f"{kid} retires {settings.tokens.longest_access_token_seconds}s after that\n"
            )
        return 0

    return _with_services(action)


def _keys_list(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        now = datetime.now(UTC)
        ring = services.key_ring
        signing = ring.signing_key().kid
        for key in ring.all_keys():
            if key.kid == signing:
                state = "current"
            elif key.not_before > now:
                state = "next"
            else:
                state = "previous"
            retires = f"{key.retired_at:%Y-%m-%dT%H:%M:%SZ}" if key.retired_at else "-"
            sys.stdout.write(
                f"{key.kid}\t{state}\t{key.alg}\t"
                f"from {key.not_before:%Y-%m-%dT%H:%M:%SZ}\tretires {retires}\n"
            )
        return 0

    return _with_services(action)


def _secret_keys_status(args: argparse.Namespace) -> int:
    from keystile.secret_keys import KeyUse, read_secret_keys

    async def action(services: Any) -> int:
        keys = read_secret_keys(services.settings)
        ids = keys.ids
        codes = services.factors.codes
        recovery_codes, recovery_users = await codes.recovery_codes_by_secret_key()
        rows: list[tuple[str, KeyUse]] = [
            (
                "API keys (live)",
                KeyUse.of(ids, await services.machine.api_keys.count_by_secret_key()),
            ),
            (
                "client secrets",
                KeyUse.of(ids, await services.machine.clients.count_by_secret_key()),
            ),
            ("recovery codes (unused)", recovery_codes),
            ("  their users", recovery_users),
            ("TOTP secrets", await codes.totp_by_secret_key()),
        ]
        sys.stdout.write(_key_use_report(ids, rows))
        return 0

    return _with_services(action)


def _key_use_report(ids: Sequence[str], rows: Sequence[tuple[str, KeyUse]]) -> str:
    """Say what is under which secret key: a table, then what each fallback still serves."""
    header = ["", f"current {ids[0]}", *(f"fallback {kid}" for kid in ids[1:])]
    header += ["not configured", "not recorded"]
    table = [header]
    for name, use in rows:
        counts = [use.current, *use.fallbacks, use.unconfigured, use.unrecorded]
        table.append([name, *(str(count) for count in counts)])
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]
    kinds = [(name, use) for name, use in rows if not name.startswith(" ")]
    unrecorded = any(use.unrecorded for _, use in kinds)
    for place, kid in enumerate(ids[1:]):
        needs = [f"{use.fallbacks[place]} {name}" for name, use in kinds if use.fallbacks[place]]
        if needs:
            lines.append(f"fallback {kid}: still needed by {', '.join(needs)}")
        else:
            maybe = " (of those recorded: see not recorded)" if unrecorded else ""
            lines.append(
                f"fallback {kid}: no API key, client secret, recovery code or TOTP secret "
                f"is under it{maybe}"
            )
    if any(use.unconfigured for _, use in kinds):
        lines.append(
            "not configured: under a secret key that is neither current nor a fallback; "
            "already refused (replace them, or add that key back as a fallback)"
        )
    if unrecorded:
        lines.append(
            "not recorded: made before keystile recorded the secret key (migration 0014); "
            "only an HMAC is kept, so which key cannot be told: keep the fallbacks, or "
            "replace those API keys and client secrets and ask those users to make new "
            "recovery codes"
        )
    lines.append("TOTP secrets with no recorded key were opened under each key to find theirs")
    return "".join(f"{line}\n" for line in lines)


def _mail_list(args: argparse.Namespace) -> int:
    from keystile.mail.maildir import list_messages

    directory = _maildir()
    rows = list_messages(directory)
    for row in rows[-args.n :]:
        sys.stdout.write(
            f"{row.key}\t{row.date}\t{_printable(row.to)}\t{_printable(row.subject)}\n"
        )
    if not rows:
        sys.stderr.write(f"no mail in {directory}\n")
    return 0


def _mail_show(args: argparse.Namespace) -> int:
    from keystile.mail.maildir import show_message

    sys.stdout.write(show_message(_maildir(), args.id, raw=args.raw))
    return 0


def _maildir() -> Path:
    from keystile.mail.bootstrap import maildir_path

    return maildir_path(load_settings()).resolve()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keystile", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve HTTP (embedded PostgreSQL/Redis if unset)")
    serve.add_argument("--host", help="address to listen on (default: the host setting)")
    serve.add_argument("--port", type=int, help="port to listen on (default: the port setting)")
    serve.add_argument(
        "--workers",
        type=_positive,
        help="Hypercorn worker processes (default: the workers setting)",
    )
    serve.set_defaults(func=_serve)

    migrate_cmd = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate_cmd.add_argument(
        "revision", nargs="?", default="head", help="alembic revision (default: head)"
    )
    migrate_cmd.set_defaults(func=_migrate)

    user = commands.add_parser("user", help="administer accounts").add_subparsers(
        dest="user_command", required=True
    )
    create = user.add_parser("create", help="create an account")
    create.add_argument("email", help="the new account's address")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    create.set_defaults(func=_user_create)
    disable = user.add_parser("disable", help="disable an account and end its sessions")
    disable.add_argument("email", help="the account's address")
    disable.set_defaults(func=_user_disable)
    listing = user.add_parser("list", help="list accounts by email")
    listing.add_argument(
        "--limit", type=_positive, default=100, metavar="N", help="how many (default 100)"
    )
    listing.add_argument("--after", default="", metavar="EMAIL", help="list emails after this one")
    listing.set_defaults(func=_user_list)
    grant_role = user.add_parser("grant-role", help="give an account a role (e.g. admin)")
    grant_role.add_argument("email", help="the account's address")
    grant_role.add_argument("role", help="the role, e.g. admin")
    grant_role.set_defaults(func=_user_change_role, grant=True)
    reset_factors = user.add_parser(
        "reset-factors", help="remove an account's second factors (audited, the user is mailed)"
    )
    reset_factors.add_argument("email", help="the account's address")
    reset_factors.set_defaults(func=_user_reset_factors)
    revoke_role = user.add_parser("revoke-role", help="take a role from an account")
    revoke_role.add_argument("email", help="the account's address")
    revoke_role.add_argument("role", help="the role to take")
    revoke_role.set_defaults(func=_user_change_role, grant=False)
    importing = user.add_parser(
        "import", help="import accounts from a CSV of email,password_hash (legacy hashes too)"
    )
    importing.add_argument("file", type=Path, help="the CSV file (a header row is optional)")
    importing.add_argument(
        "--batch-size",
        type=_positive,
        default=500,
        metavar="N",
        help="rows per INSERT statement (default 500)",
    )
    importing.add_argument("--quiet", action="store_true", help="no progress bar")
    importing.set_defaults(func=_user_import)

    client = commands.add_parser(
        "client", help="OAuth clients for the client credentials grant"
    ).add_subparsers(dest="client_command", required=True)
    client_create = client.add_parser("create", help="register a client; prints its secret once")
    client_create.add_argument("name", help="a name for operators; need not be unique")
    client_create.add_argument(
        "--scope", action="append", required=True, help="a scope it may ask for (repeatable)"
    )
    client_create.add_argument("--audience", help="one extra audience it may ask tokens for")
    client_create.set_defaults(func=_client_create)
    client_list = client.add_parser(
        "list", help="list clients, oldest first; a next page is named on stderr"
    )
    client_list.add_argument(
        "--limit",
        type=_page_size,
        metavar="N",
        default=MAX_PAGE_SIZE,
        help=f"clients per page, 1 to {MAX_PAGE_SIZE} (default {MAX_PAGE_SIZE})",
    )
    client_list.add_argument(
        "--after", metavar="CURSOR", help="the page after this cursor (from a `more:` line)"
    )
    client_list.set_defaults(func=_client_list)
    client_delete = client.add_parser("delete", help="delete a client; its tokens stop working")
    client_delete.add_argument("client_id", help="the client id (a UUID) from `client list`")
    client_delete.set_defaults(func=_client_delete)

    hashing = commands.add_parser("hash", help="password hashing").add_subparsers(
        dest="hash_command", required=True
    )
    calibrate_cmd = hashing.add_parser(
        "calibrate", help="find argon2id parameters for a target time on this machine"
    )
    calibrate_cmd.add_argument(
        "--target-ms", type=float, required=True, metavar="MS", help="the time one hash should take"
    )
    calibrate_cmd.add_argument(
        "--memory-kib", type=int, help="memory cost to keep (default: the setting, >= 19456)"
    )
    calibrate_cmd.add_argument(
        "--seconds", type=float, default=3.0, help="how long to measure the hash rate"
    )
    calibrate_cmd.set_defaults(func=_hash_calibrate)

    audit = commands.add_parser("audit", help="read and prune the audit log").add_subparsers(
        dest="audit_command", required=True
    )
    tail = audit.add_parser("tail", help="show the most recent audit events, oldest first")
    tail.add_argument("-n", type=_positive, default=20, help="how many events (default 20)")
    tail.add_argument("--user", metavar="EMAIL", help="only the events of this account")
    tail.set_defaults(func=_audit_tail)
    prune = audit.add_parser("prune", help="delete audit events past the retention period")
    prune.add_argument(
        "--older-than",
        type=_positive,
        metavar="DAYS",
        help="delete events older than this many days (default: audit_retention_days)",
    )
    prune.set_defaults(func=_audit_prune)

    keys = commands.add_parser("keys", help="manage token signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    rotate = keys.add_parser(
        "rotate",
        help="publish a next key now, sign with it after a delay, retire the old one "
        "after the longest token lifetime",
    )
    rotate.add_argument(
        "--promote-after",
        type=int,
        metavar="SECONDS",
        help="delay before the new key signs (default: signing_key_promote_after_seconds)",
    )
    rotate.set_defaults(func=_keys_rotate)
    keys.add_parser("list", help="list keys: next, current, previous").set_defaults(func=_keys_list)

    secret_keys = commands.add_parser(
        "secret-keys", help="the secret key and its fallbacks (secret_key_fallbacks)"
    ).add_subparsers(dest="secret_keys_command", required=True)
    secret_keys.add_parser(
        "status",
        help="count the API keys, client secrets, recovery codes and TOTP secrets still "
        "under each key: what dropping a fallback would break",
    ).set_defaults(func=_secret_keys_status)

    mail = commands.add_parser(
        "mail", help="read the development Maildir (data_dir/mail; used without smtp_url)"
    ).add_subparsers(dest="mail_command", required=True)
    mail_list = mail.add_parser("list", help="list messages, oldest first: id, date, to, subject")
    mail_list.add_argument("-n", type=_positive, default=50, help="the last N (default 50)")
    mail_list.set_defaults(func=_mail_list)
    mail_show = mail.add_parser("show", help="show one message's headers and plain text")
    mail_show.add_argument(
        "id", help="the id from `keystile mail list` (a unique prefix is enough)"
    )
    mail_show.add_argument("--raw", action="store_true", help="the whole message as stored")
    mail_show.set_defaults(func=_mail_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the keystile command line."""
    args = _parser().parse_args(argv)
    try:
        log_settings = load_settings()
        configure_logging(log_settings.logs.level, log_settings.logs.format)
    except SettingsError:
        configure_logging()  # the command itself reports the bad setting
    try:
        return int(args.func(args))
    except (SettingsError, KeystileError, DatabaseUnreachable) as exc:
        sys.stderr.write(f"keystile: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
