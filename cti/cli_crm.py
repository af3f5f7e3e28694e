"""`cti crm import | export | seed`: customer data in and out of the built-in store.

Every subcommand brings the database to the current schema first (migrations are
idempotent), so they work on a fresh data directory as well as on a running installation's.
Exit codes: 0 ok; 1 the command failed (a batch was refused by the database, ...); 2 bad
usage or a file that cannot be imported at all (unknown column, missing name column, a
state file that belongs to another file); 3 the database cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from cti.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

_LAYOUT_HELP = """\
CSV layout (UTF-8, header row, any column order; only 'name' is required):
  name, kind (person|organisation), street, postcode, city, country (ISO code),
  segment, vip (true/false), language, time_zone (IANA),
  phone, phone_kind, phone2, phone2_kind, ... (kinds: mobile landline work fax other),
  email, email2, ..., account, card, contract, id_<type> (other identifier types),
  cf_<field> custom fields; a field that is not defined yet may carry its type in the
  header: cf_tariff:choice=basic|plus|pro, cf_since:date, cf_limit:number,
  cf_newsletter:bool, cf_note:text.
Rejected rows go to FILE.rejects.csv (line, reason), rows that match an existing customer
by number, e-mail or identifier to FILE.merges.csv (merge suggestions); the position after
each committed batch is kept in FILE.import-state.json for --resume.
"""


def register(sub: Any) -> None:
    crm = sub.add_parser(
        "crm",
        help="import, export and seed customer data of the built-in CRM store",
        description="Customer data in and out of the built-in CRM store (crm.url).",
    )
    cs = crm.add_subparsers(dest="crm_command", metavar="SUBCOMMAND")

    p = cs.add_parser(
        "import",
        help="import customers from a CSV file (streaming, batch-atomic, resumable)",
        description="Import customers from CSV. " + _LAYOUT_HELP.split("\n", 1)[0],
        epilog=_LAYOUT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="CSV file")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="lines per transaction (default 40000 into SQLite, 5000 into PostgreSQL); bigger "
        "batches import faster (each touched index page is written once per transaction) but "
        "hold more rows in memory and redo more after a crash",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted import")
    p.add_argument("--report", type=Path, help="rejected rows (default FILE.rejects.csv)")
    p.add_argument("--merges", type=Path, help="merge suggestions (default FILE.merges.csv)")
    p.add_argument("--state", type=Path, help="resume state (default FILE.import-state.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    p.add_argument(
        "--parse-process",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read and validate in worker processes (default: for files from 4 MiB on a "
        "machine with 2+ cores); into SQLite two workers parse and take turns writing, into "
        "PostgreSQL one parses ahead while this process writes",
    )
    p.set_defaults(handler=_import)

    p = cs.add_parser(
        "export",
        help="export all customers as CSV in the import layout",
        description="Write every customer as CSV (the layout `cti crm import` reads).",
    )
    p.add_argument("--out", type=Path, help="output file (default: standard output)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    p.set_defaults(handler=_export)

    p = cs.add_parser(
        "seed",
        help="fill an empty store with a deterministic demo data set",
        description="Generate German demo customers (numbers, e-mails, ids, custom fields, "
        "interactions, cases, consent, do-not-call entries); same --seed, same data.",
    )
    p.add_argument("--customers", type=int, required=True, help="number of customers")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    p.set_defaults(handler=_seed)


def _err(msg: str) -> None:
    print(f"cti crm: {msg}", file=sys.stderr)


async def _prepare(settings: Settings) -> tuple[Any, int]:
    """(engine, 0) after migrating, or (None, exit code)."""
    from crm_bridge.db import make_engine, migrate

    url = settings.database_url()
    try:
        await migrate(url)
    except (OSError, ConnectionError) as e:
        _err(f"cannot reach the database: {e}")
        return None, EXIT_UNREACHABLE
    return make_engine(url), EXIT_OK


def _import(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_import_async(args, settings))


async def _import_async(args: argparse.Namespace, settings: Settings) -> int:
    from crm_bridge.csvio import LayoutError
    from crm_bridge.importer import ImportOptions, ImportUsageError, import_csv

    if args.batch is not None and args.batch < 1:
        _err("--batch must be at least 1")
        return EXIT_USAGE
    if not args.file.is_file():
        _err(f"{args.file}: no such file")
        return EXIT_USAGE
    engine, code = await _prepare(settings)
    if engine is None:
        return code
    opts = ImportOptions(
        batch_size=args.batch,
        resume=args.resume,
        report_path=args.report,
        merge_path=args.merges,
        state_path=args.state,
        actor=f"import:{os.environ.get('USER', 'cli')}",
        progress=False if args.no_progress else None,
        parse_process=args.parse_process,
    )
    try:
        res = await import_csv(engine, args.file, settings.crm, opts)
    except (ImportUsageError, LayoutError) as e:
        _err(f"{args.file}: {e}")
        return EXIT_USAGE
    finally:
        await engine.dispose()
    if res.resumed_at_line:
        print(f"resumed after line {res.resumed_at_line}", file=sys.stderr)
    if res.new_fields:
        print(f"defined custom fields: {', '.join(res.new_fields)}", file=sys.stderr)
    print(
        f"{res.rows:,} rows: {res.imported:,} imported, {res.rejected:,} rejected, "
        f"{res.duplicates:,} duplicates ({res.rows_per_s:,.0f} rows/s)",
        file=sys.stderr,
    )
    if res.rows and res.parser_cpu_s:
        print(
            f"CPU: {res.cpu_s:,.1f} s in this process, {res.parser_cpu_s:,.1f} s in worker "
            "processes",
            file=sys.stderr,
        )
    if res.rejected:
        print(f"rejected rows (line, reason): {res.report_path}", file=sys.stderr)
    if res.duplicates:
        print(f"merge suggestions: {res.merge_path}", file=sys.stderr)
    if res.failed:
        _err(res.failed)
        return EXIT_FAILED
    return EXIT_OK


def _export(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_export_async(args, settings))


async def _export_async(args: argparse.Namespace, settings: Settings) -> int:
    from crm_bridge.exporter import export_csv

    engine, code = await _prepare(settings)
    if engine is None:
        return code
    progress = False if args.no_progress else None
    try:
        if args.out is None:
            sys.stdout.reconfigure(newline="")  # type: ignore[union-attr]
            res = await export_csv(engine, sys.stdout, progress=progress)
            sys.stdout.flush()
        else:
            tmp = args.out.with_name(args.out.name + ".part")
            try:
                with tmp.open("w", encoding="utf-8", newline="") as f:
                    res = await export_csv(engine, f, progress=progress)
                os.replace(tmp, args.out)
            except OSError as e:
                _err(f"cannot write {args.out}: {e.strerror}")
                tmp.unlink(missing_ok=True)
                return EXIT_FAILED
    finally:
        await engine.dispose()
    print(f"exported {res.customers:,} customers in {res.seconds:.1f} s", file=sys.stderr)
    return EXIT_OK


def _seed(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_seed_async(args, settings))


async def _seed_async(args: argparse.Namespace, settings: Settings) -> int:
    from crm_bridge.seed import SeedError, seed_database

    if args.customers < 0:
        _err("--customers must not be negative")
        return EXIT_USAGE
    engine, code = await _prepare(settings)
    if engine is None:
        return code
    try:
        res = await seed_database(
            engine,
            args.customers,
            args.seed,
            progress=False if args.no_progress else None,
        )
    except SeedError as e:
        _err(str(e))
        return EXIT_FAILED
    finally:
        await engine.dispose()
    print(
        f"seeded {res.customers:,} customers ({res.phones:,} numbers, {res.emails:,} e-mails, "
        f"{res.interactions:,} interactions, {res.cases:,} cases) in {res.seconds:.1f} s",
        file=sys.stderr,
    )
    return EXIT_OK
