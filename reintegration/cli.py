"""The ``reintegration`` command: mint a development token, run the whole embedded stack, verify the audit
trail, reconcile the read model with the workflows, back up and restore."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from reintegration.settings import Settings, get_settings
from workflows.model import HUMAN_ROLES, Role


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reintegration", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="print a development bearer token")
    token.add_argument("--role", required=True, choices=[r.value for r in HUMAN_ROLES])
    token.add_argument("--sub", required=True, help="the user's id (not a name)")
    token.add_argument("--agency", help="the partner's agency id (partners only)")
    token.add_argument(
        "--countries",
        help="comma-separated ISO 3166-1 alpha-2 codes, or '*' for every country; "
        "absent: no country (scope fails closed)",
    )
    token.add_argument("--name", help="display name")
    token.add_argument("--hours", type=float, help="lifetime in hours")

    commands.add_parser("run", help="run Temporal, the worker and the API in the foreground")
    commands.add_parser("api", help="serve the API with uvicorn, as the settings say (host, port, trusted proxies)")

    db = commands.add_parser("db", help="the database's schema (Alembic migrations)")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser(
        "upgrade",
        help="bring the database to the newest schema (the API and worker do it on start), and index the "
        "persons of cases opened before the search's indexes (the API does it on start too)",
    )
    db_commands.add_parser("current", help="print the schema revision the database is at, and the newest")

    languages = commands.add_parser("i18n", help="the message catalogues (the workspace, the API's problems)")
    languages_commands = languages.add_subparsers(dest="i18n_command", required=True)
    languages_commands.add_parser(
        "update", help="extract the messages of the code and the templates; bring every language's catalogue up to them"
    )
    languages_commands.add_parser(
        "check", help="exit 0 if every language translates every message, else 1 listing what each lacks"
    )

    audit = commands.add_parser("audit", help="the audit trail")
    verify = audit.add_subparsers(dest="audit_command", required=True).add_parser(
        "verify", help="check the HMAC chain: exit 0 if intact, 1 naming the row where it breaks"
    )
    verify.add_argument(
        "--expect-head",
        metavar="SEQ:MAC",
        help="a head printed by an earlier verify and noted outside the database: fail unless "
        "the chain still holds that row with that MAC (not cut back, not rewritten)",
    )
    verify.add_argument(
        "--no-anchor",
        action="store_true",
        help="verify without the anchor file (REINTEGRATION_AUDIT_ANCHOR_FILE), knowingly: a trail cut back "
        "or wiped then passes; without it, a file named in the settings and missing fails the check (exit 3)",
    )

    keys = commands.add_parser("keys", help="the key-encryption key and the data keys it wraps")
    rotate = keys.add_subparsers(dest="keys_command", required=True).add_parser(
        "rotate",
        help="re-wrap every data key (cases', system, keyed-hash, audit) under the current key-encryption key",
        description="Re-wrap, a batch per transaction, every data key still wrapped by a previous key-encryption "
        "key (REINTEGRATION_KEK_PREVIOUS_FILES, or an earlier version of the Vault transit key) under the current "
        "one, while the system serves; run again after an interruption to go on. Exit 0 when every data key is "
        "under the current KEK, 1 when some remain (stopped by --max-batches, written meanwhile by a process "
        "still on the old KEK, or not unwrapping; or, a dry run too, some are under a newer version of the Vault "
        "transit key than this run's, which are left as they are: run it again, it takes the newest), 2 when "
        "the rotation cannot run as configured (nothing changed), 3 when the database or Vault is unavailable.",
    )
    rotate.add_argument("--dry-run", action="store_true", help="count what remains and check the KEKs; change nothing")
    rotate.add_argument("--batch", type=int, default=500, help="data keys per transaction (default 500)")
    rotate.add_argument("--max-batches", type=int, help="stop after this many batches (run again to go on)")

    sim = commands.add_parser("partner-sim", help="run a simulator of partner agencies' systems")
    sim.add_argument("--agency", action="append", required=True, help="an agency id to play (repeatable)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9100)
    sim.add_argument("--api", default=None, help="the API's base URL (default: this machine's)")
    sim.add_argument("--secret", help="the shared webhook secret (default: a new random one, with --register)")
    sim.add_argument(
        "--register",
        action="store_true",
        help="point the agencies' webhooks at this simulator (uses a development admin token)",
    )
    sim.add_argument("--fail-first", type=int, default=0, help="answer 503 to the first N deliveries")
    sim.add_argument("--slow", type=float, default=0.0, help="answer each delivery after this many seconds")
    sim.add_argument("--reject-status", type=int, help="refuse every delivery with this 4xx status")
    sim.add_argument(
        "--act-after",
        type=float,
        default=2.0,
        help="accept and complete each task this many seconds after it arrives (negative: never)",
    )

    rec = commands.add_parser(
        "reconcile",
        help="compare the read model with the workflows' state, a case at a time; --repair fixes drift",
        description="Exit 0 when no drift remains, 1 when drift remains (found and not repaired), 2 on bad "
        "usage, 3 when some cases could not be checked (or Temporal or the database is unreachable).",
    )
    rec.add_argument("--repair", action="store_true", help="rewrite each drifted case's rows from its workflow")
    rec.add_argument("--rate", type=float, default=5.0, help="cases checked per second at most (default 5)")
    rec.add_argument("--case", action="append", dest="cases", metavar="ID", help="check this case (repeatable)")
    rec.add_argument("--all", action="store_true", dest="include_closed", help="closed cases too")

    backup = commands.add_parser(
        "backup",
        help="back up Temporal's store (embedded), the database and the documents while everything runs",
        description="Exit 0 when the backup is written, 1 when refused or failed (nothing left behind), 3 when "
        "the database is unreachable. The key-encryption key and the other secrets are never in it: keep them apart.",
    )
    backup.add_argument("destination", type=Path, metavar="DEST", help="a new or empty folder")
    backup.add_argument(
        "--include-keys",
        action="store_true",
        help="embedded default only: copy the development key files into the backup too (it then opens every case)",
    )
    restore = commands.add_parser(
        "restore",
        help="restore a backup into an empty data folder (and an empty database), checked against its manifest",
        description="Exit 0 when restored, 1 when refused (nothing changed) or failed.",
    )
    restore.add_argument("source", type=Path, metavar="SRC", help="a folder written by `reintegration backup`")

    args = parser.parse_args(argv)
    if args.command in ("backup", "restore"):
        return _backup_or_restore(args)
    if args.command == "reconcile":
        return _reconcile(args)
    if args.command == "token":
        return _token(args)
    if args.command == "keys":
        return _keys_rotate(args)
    if args.command == "audit":
        return _audit_verify(args.expect_head, no_anchor=args.no_anchor)
    if args.command == "partner-sim":
        return _partner_sim(args)
    if args.command == "api":
        return serve_api()
    if args.command == "db":
        return _db(args.db_command)
    if args.command == "i18n":
        return _i18n(args.i18n_command)
    from reintegration.stack import run_stack

    return run_stack()


def _backup_or_restore(args: argparse.Namespace) -> int:
    from reintegration import backup
    from reintegration.stack import restrict_files

    restrict_files()  # a backup holds every case (encrypted): its owner's only, as the data folder
    if args.command == "backup":
        return backup.backup_command(get_settings(), args.destination, include_keys=args.include_keys)
    return backup.restore_command(get_settings(), args.source)


def _db(what: str) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from reintegration import case_facts, person_index
    from reintegration.db import OutdatedSchema, keyring_from_settings, make_engine
    from reintegration.migrate import current, head, upgrade_schema
    from reintegration.stack import restrict_files

    restrict_files()
    settings = get_settings()
    engine = make_engine(settings)
    try:
        if what == "upgrade":
            before = current(engine)
            after = upgrade_schema(engine)
            print(
                f"database schema: {before or 'none'} -> {after}"
                if before != after
                else f"database schema: {after} (newest)"
            )
            keyring = keyring_from_settings(settings)
            try:
                print(f"persons indexed for search: {person_index.index_missing(engine, keyring)}")
                print(f"cases given their facts for the reports: {case_facts.keep_missing(engine, keyring)}")
            finally:
                keyring.dispose()
        else:
            print(f"database schema: {current(engine) or 'none'}; newest {head()}")
        return 0
    except OutdatedSchema as exc:
        print(f"reintegration db: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"reintegration db: the database is unavailable ({type(exc).__name__})", file=sys.stderr)
        return 3
    finally:
        engine.dispose()


def _i18n(what: str) -> int:
    import importlib

    # Loaded by name, as `reintegration api` serves "api.main:served": the command line does not import
    # the web layer (tests/test_layers.py), and the other commands start without it.
    catalogues = importlib.import_module("api.web.i18n")
    if what == "update":
        missing: dict[str, list[str]] = catalogues.update()
        print(f"catalogues written under {catalogues.LOCALE_DIR}")
        for language, messages in missing.items():
            print(f"{language}: {len(messages)} untranslated")
        return 0
    missing = catalogues.check()
    for language, messages in missing.items():
        print(f"{language}: {len(messages)} untranslated")
        for message in messages:
            print(f"  {language}: {message!r}")
    return 1 if any(missing.values()) else 0


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How the API is served: no access log of uvicorn's own (it would print query strings; the API
    logs one line per request itself), and forwarded headers believed only from the configured
    proxies (none by default: a client cannot choose the address its rate limit is charged to)."""
    proxies = ",".join(settings.trusted_proxies)
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "access_log": False,
        # h11, whatever else is installed: it keeps at most 16 KiB of a request it has not read whole
        # (beyond one read of the socket), where httptools would keep taking headers, into memory,
        # from anyone (before any token is checked).
        "http": "h11",
        # uvicorn's own logging set-up prints plain text past the redaction: its loggers reach the
        # root logger instead, which writes the same JSON as everything else (reintegration.logs).
        "log_config": None,
        # Several processes share the port; each runs the app with its lifespan (the schema upgrade
        # takes a lock, the development seed tolerates a twin) and its share of the rate limits.
        **({"workers": settings.api_processes} if settings.api_processes > 1 else {}),
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or None,
    }


def serve_api() -> int:
    import uvicorn

    from reintegration import affinity
    from reintegration.logs import configure_logging
    from reintegration.metrics import shared_across_processes
    from reintegration.stack import restrict_files

    restrict_files()
    configure_logging()
    settings = get_settings()
    try:
        affinity.named_cpus(settings.cpu_affinity)  # each process takes them as it starts
    except affinity.AffinityError as exc:
        print(f"reintegration api: {exc}", file=sys.stderr)
        return 2
    with shared_across_processes(settings.api_processes):  # /metrics answers for every process
        # A factory: each process takes a CPU of its own first (``api.main.served``).
        uvicorn.run("api.main:served", factory=True, **uvicorn_options(settings))
    return 0


def _partner_sim(args: argparse.Namespace) -> int:
    import secrets

    import uvicorn

    from reintegration.partner_sim import (
        SimulatorConfig,
        create_simulator,
        register_webhooks,
    )
    from reintegration.tokens import mint

    settings = get_settings()
    api = args.api or f"http://{settings.api_host}:{settings.api_port}"
    secret = args.secret or (secrets.token_urlsafe(32) if args.register else None)
    if secret is None or len(secret) < 32:
        print("reintegration partner-sim: give --secret (32+ characters) or --register", file=sys.stderr)
        return 2
    tokens = {a: mint(settings, role=Role.partner, sub=f"partner-sim-{a}", agency=a) for a in args.agency}
    config = SimulatorConfig(
        agencies=args.agency,
        secret=secret,
        fail_first=args.fail_first,
        slow_seconds=args.slow,
        reject_status=args.reject_status,
        api_url=api,
        tokens=tokens,
        act_after=None if args.act_after < 0 else args.act_after,
    )
    app, _ = create_simulator(config)
    base = f"http://{args.host}:{args.port}"
    if args.register:
        admin = mint(settings, role=Role.admin, sub="partner-sim-admin")
        asyncio.run(
            register_webhooks(api_url=api, admin_token=admin, agencies=args.agency, base_url=base, secret=secret)
        )
    print(
        f"Partner simulator for {', '.join(args.agency)} at {base}/webhook/<agency> (stats: {base}/stats)", flush=True
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    """One line per drifted case (ids, tables and fields: never values), one per case that could not
    be checked, and a summary line with the counts."""
    import math
    import re

    from sqlalchemy.exc import SQLAlchemyError

    from reintegration.db import keyring_from_settings, make_engine
    from reintegration.reconcile import Report, reconcile
    from reintegration.temporal import connect

    if not (math.isfinite(args.rate) and args.rate > 0):
        print("reintegration reconcile: --rate takes a positive number of cases per second", file=sys.stderr)
        return 2
    for case_id in args.cases or []:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}", case_id):
            print("reintegration reconcile: --case takes a case id", file=sys.stderr)
            return 2
    settings = get_settings()
    engine, keyring = make_engine(settings), keyring_from_settings(settings)

    async def run() -> Report:
        client = await connect(settings, keyring=keyring, attempts=20, delay=0.5)
        return await reconcile(
            client,
            engine,
            keyring,
            repair=args.repair,
            rate=args.rate,
            case_ids=args.cases,
            include_closed=args.include_closed,
            task_queue=settings.temporal_task_queue,
        )

    try:
        report = asyncio.run(run())
    except ConnectionError:
        print(f"reintegration reconcile: Temporal at {settings.temporal_address} is not reachable", file=sys.stderr)
        return 3
    except SQLAlchemyError as exc:
        print(f"reintegration reconcile: the database is unavailable ({type(exc).__name__})", file=sys.stderr)
        return 3
    finally:
        engine.dispose()
        keyring.dispose()
    found: dict[str, list[str]] = {}
    for drift in report.drifts:
        found.setdefault(drift.case_id, []).append(drift.where)
    left = {d.case_id for d in report.remaining}
    for case_id, fields in found.items():
        outcome = ("not repaired" if args.repair else "found") if case_id in left else "repaired"
        print(f"drift {case_id} ({outcome}): {', '.join(dict.fromkeys(fields))}")
    for failure in report.failures:
        print(f"failed {failure.case_id}: {failure.error}")
    print(
        f"reconcile: checked {report.checked}, drifted {report.drifted}, repaired {report.repaired}, "
        f"failed {report.failed}, skipped {report.skipped}; "
        + (f"drift remains in {len(left)} case(s)" if left else "no drift remains")
    )
    if left:
        return 1
    return 3 if report.failed else 0


def _audit_verify(expect_head: str | None = None, *, no_anchor: bool = False) -> int:
    from reintegration import anchor, audit
    from reintegration.db import keyring_from_settings, make_engine

    try:
        expected = audit.parse_head(expect_head) if expect_head is not None else None
    except ValueError as exc:
        print(f"reintegration audit verify: --expect-head: {exc}", file=sys.stderr)
        return 2
    settings = get_settings()
    path = settings.audit_anchor_path
    # Named in the settings (not the development default under the data folder) and written to:
    # the file must be there, or the cut-back check would pass unchecked (deleted, or not mounted
    # where this runs, as on the compose file's API container).
    required = settings.audit_anchor_file is not None and settings.audit_anchor_seconds > 0
    anchored, missing, empty = None, False, False
    if no_anchor:
        print(
            f"reintegration audit verify: --no-anchor: the anchor file ({path}) is not read, so the check "
            "that the trail was not cut back or wiped is skipped",
            file=sys.stderr,
        )
    else:
        try:  # the newest head the worker anchored outside the database
            anchored = anchor.newest(path, missing_ok=False)
        except anchor.AnchorFileMissing:
            missing = True
        except anchor.AnchorFileUnreadable as exc:
            print(f"reintegration audit verify: {exc}", file=sys.stderr)
            return 3
        empty = not missing and anchored is None
    engine, keyring = make_engine(settings), keyring_from_settings(settings)  # the KEK unwraps the MAC key
    try:
        if required and empty and anchor.has_rows(engine):
            print(
                f"reintegration audit verify: the audit anchor file {path} holds no anchor: emptied, or no "
                "worker has anchored the head yet (a worker does within seconds of the first audited action); "
                "--no-anchor verifies knowingly "
                "without it",
                file=sys.stderr,
            )
            return 3
        if missing and anchor.has_rows(engine):
            if required:
                print(
                    f"reintegration audit verify: no audit anchor file at {path}: deleted, not mounted where "
                    "this runs, or not written yet (a worker does within seconds of the first audited action; "
                    "run it where the workers' anchors are, e.g. `docker compose exec worker "
                    "reintegration audit verify`); --no-anchor verifies knowingly without it, and a trail cut "
                    "back then passes",
                    file=sys.stderr,
                )
                return 3
            why = (
                "anchoring is off (REINTEGRATION_AUDIT_ANCHOR_SECONDS=0)"
                if settings.audit_anchor_seconds <= 0
                else "the worker writes it within REINTEGRATION_AUDIT_ANCHOR_SECONDS"
            )
            print(
                f"reintegration audit verify: note: no audit anchor file at {path} yet ({why}): the chain is "
                "not checked against an anchored head",
                file=sys.stderr,
            )
        result = audit.verify(engine, keyring, expect_head=expected, anchor=anchored.head if anchored else None)
    finally:
        engine.dispose()
        keyring.dispose()
    if not result.ok:
        print(f"audit trail broken at seq {result.broken_at}: {result.reason}", file=sys.stderr)
        return 1
    if not result.head_seq:
        print("audit trail intact: 0 rows (and no cases)")
        return 0
    held = f", holds the expected head {expected[0]}" if expected else ""
    if anchored:
        note = f"holds head {anchored.seq} anchored at {anchored.at.isoformat()} in {path}"
    elif no_anchor:
        note = "not checked against the anchor file: --no-anchor"
    else:
        note = "note it outside the database; check it later with --expect-head"
    print(f"audit trail intact: {result.rows} rows{held}, head {result.head_seq}:{result.head_hash} ({note})")
    return 0


_NEWER = (
    "{keys} data key(s) are under a newer version of the Vault transit key than this run's ({kek_id}), "
    "left as they are: the key was rotated in Vault after this command started. Run it again: it takes "
    "the newest version (and raise min_decryption_version only after a run that ends with every key under it)"
)


def _keys_rotate(args: argparse.Namespace) -> int:
    """Progress after each batch and a summary; key and KEK ids only, never a key."""
    from sqlalchemy.exc import SQLAlchemyError

    from reintegration import keys
    from reintegration.db import keyring_from_settings, make_engine
    from reintegration.vault import VaultUnavailable

    if args.batch < 1 or (args.max_batches is not None and args.max_batches < 1):
        print("reintegration keys rotate: --batch and --max-batches take a positive number", file=sys.stderr)
        return 2
    settings = get_settings()
    try:
        keyring = keyring_from_settings(settings)
    except (OSError, ValueError) as exc:  # a key file missing or not a key; a Vault key not usable
        print(f"reintegration keys rotate: {exc}", file=sys.stderr)
        return 2
    except VaultUnavailable as exc:
        print(f"reintegration keys rotate: {exc}", file=sys.stderr)
        return 3
    engine = make_engine(settings)

    def progress(report: keys.Rotation, total: int) -> None:
        print(f"re-wrapped {report.rewrapped} of {total} (skipped {report.skipped})", flush=True)

    try:
        print(f"current key-encryption key: {keyring.kek.kek_id}")
        groups = keys.check(engine, keyring)
        for group in groups:
            print(f"to re-wrap: {group.keys} data key(s) under {group.kek_id} (unwrapped by {group.unwrapped_by})")
        later = keys.newer(engine, keyring)
        for group in later:
            print(f"newer, skipped: {group.keys} data key(s) under {group.kek_id}, a newer version than this run's")
        if args.dry_run:
            newer = f", {sum(g.keys for g in later)} newer (skipped)" if later else ""
            print(f"dry run: {sum(g.keys for g in groups)} data key(s) to re-wrap{newer}; nothing changed")
            if later:
                print(_NEWER.format(keys=sum(g.keys for g in later), kek_id=keyring.kek.kek_id))
                return 1
            return 0
        report = keys.rotate(engine, keyring, batch=args.batch, max_batches=args.max_batches, progress=progress)
    except keys.RotationRefused as exc:
        print(f"reintegration keys rotate: refused, nothing changed: {exc}", file=sys.stderr)
        return 2
    except VaultUnavailable as exc:
        print(f"reintegration keys rotate: {exc} (run again to go on)", file=sys.stderr)
        return 3
    except SQLAlchemyError as exc:
        print(
            f"reintegration keys rotate: the database is unavailable ({type(exc).__name__}; run again)", file=sys.stderr
        )
        return 3
    finally:
        engine.dispose()
        keyring.dispose()
    print(
        f"keys rotate: re-wrapped {report.rewrapped}, skipped {report.skipped} (destroyed or re-wrapped "
        f"meanwhile), newer {report.newer} (skipped), unreadable {len(report.unreadable)}, remaining "
        f"{report.remaining}, in {report.seconds:.1f} s ({report.keys_per_second:.0f} keys/s)"
    )
    for key_id in report.unreadable[:20]:
        print(f"unreadable: data key {key_id} does not unwrap with the KEK it names")
    if report.stopped and report.remaining:
        print(f"stopped after {report.batches} batch(es): run again to go on")
    elif report.remaining:
        print(
            f"{report.remaining} data key(s) are still under a previous KEK: written meanwhile by a process not yet "
            "given the new one as current? Restart it and run again"
        )
    if report.newer:
        print(_NEWER.format(keys=report.newer, kek_id=keyring.kek.kek_id))
    if report.remaining or report.unreadable or report.newer:
        return 1
    print("every data key is under the current key-encryption key: remove the previous ones from the settings")
    return 0


def _token(args: argparse.Namespace) -> int:
    from reintegration.tokens import DevelopmentKeyRefused, mint

    role = Role(args.role)
    if role == Role.partner and not args.agency:
        print("reintegration token: a partner token needs --agency", file=sys.stderr)
        return 2
    countries = [c.strip().upper() for c in args.countries.split(",")] if args.countries else None
    if countries and not all((len(c) == 2 and c.isascii() and c.isalpha()) or c == "*" for c in countries):
        print(
            "reintegration token: --countries takes ISO 3166-1 alpha-2 codes, e.g. ES,PT, or '*' for every country",
            file=sys.stderr,
        )
        return 2
    if countries is None and role != Role.partner:
        print(
            f"reintegration token: note: without --countries this {role.value} sees no country "
            "(give --countries ES,PT or '*')",
            file=sys.stderr,
        )
    ttl = timedelta(hours=args.hours) if args.hours else None
    try:
        token = mint(
            get_settings(), role=role, sub=args.sub, agency=args.agency, countries=countries, name=args.name, ttl=ttl
        )
    except DevelopmentKeyRefused as exc:
        print(f"reintegration token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
