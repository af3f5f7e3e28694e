"""`cti dialer campaign ... | import | stats | callbacks | simulate`: the outbound dialer from
the command line.

Every subcommand brings the database to the current schema first. Campaign changes made here
reach a running daemon within a few seconds (it re-reads campaigns). Exit codes: 0 ok; 1 the
command failed (or, for import, some rows were rejected: the report says which); 2 bad usage,
an unknown campaign or a file that cannot be imported at all; 3 the database cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cti.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _err(msg: str) -> None:
    print(f"cti dialer: {msg}", file=sys.stderr)


def register(sub: Any) -> None:
    dialer = sub.add_parser(
        "dialer",
        help="outbound campaigns: manage, import leads, figures, pacing simulation",
        description="The outbound dialer: campaigns, leads, callbacks, figures, simulation.",
    )
    ds = dialer.add_subparsers(dest="dialer_command", metavar="SUBCOMMAND")

    camp = ds.add_parser("campaign", aliases=["campaigns"], help="create, list, start, stop")
    cs = camp.add_subparsers(dest="campaign_command", metavar="ACTION")
    p = cs.add_parser("add", help="create a campaign (stopped)")
    p.add_argument("name")
    p.add_argument("--queue", required=True, help="Asterisk queue answered calls go to")
    p.add_argument("--mode", choices=["preview", "progressive", "predictive"])
    p.add_argument("--caller-id", help="caller ID presented")
    p.add_argument("--server", help="Asterisk server name (default: the first)")
    p.add_argument("--window", metavar="HH:MM-HH:MM", help="calling window (local time)")
    p.add_argument("--abandon-cap", type=float, help="e.g. 0.03 (at most 0.05)")
    p.add_argument("--abandon-window", choices=["30d", "24h"])
    p.add_argument("--max-ring", type=float, help="seconds (>= 15)")
    p.add_argument("--amd", action="store_true", help="answering machine detection")
    p.add_argument("--safe-harbor", help="safe-harbor recording")
    p.add_argument("--purpose", help="consent purpose checked at claim time")
    p.add_argument("--retry", help='JSON, e.g. {"busy": {"delay_seconds": 300}}')
    p.add_argument("--from-file", type=Path, help="a JSON or TOML file with the fields")
    p.set_defaults(handler=_campaign_add)
    p = cs.add_parser("list", help="all campaigns")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_campaign_list)
    for action, helptext in (
        ("show", "one campaign with its figures (JSON)"),
        ("start", "start dialling"),
        ("stop", "stop (calls in flight finish)"),
        ("pause", "pause (calls in flight finish)"),
        ("delete", "delete a stopped campaign with its leads"),
    ):
        p = cs.add_parser(action, help=helptext)
        p.add_argument("name")
        p.set_defaults(handler=_campaign_action, action=action)

    p = ds.add_parser(
        "import",
        help="import leads from CSV (streaming, row-level error report)",
        description="Columns: phone (required), phone2.., name, ref, time_zone, priority; "
        "others are kept as lead fields. Rejected rows go to FILE.rejects.csv.",
    )
    p.add_argument("campaign")
    p.add_argument("file", type=Path)
    p.add_argument("--batch", type=int, default=2000, help="rows per transaction")
    p.add_argument("--report", type=Path, help="rejected rows (default FILE.rejects.csv)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_import)

    p = ds.add_parser("stats", help="campaign figures; --csv: per agent/campaign/day history")
    p.add_argument("--campaign", help="only this campaign")
    p.add_argument("--csv", action="store_true", help="history as CSV on standard output")
    p.add_argument("--from", dest="since", help="YYYY-MM-DD (default: today)")
    p.add_argument("--to", dest="until", help="YYYY-MM-DD, included (default: --from)")
    p.add_argument("--json", action="store_true", help="campaign figures as JSON")
    p.set_defaults(handler=_stats)

    p = ds.add_parser("callbacks", help="the callback ledger")
    p.add_argument("--missed", action="store_true", help="only overdue or missed ones")
    p.add_argument("--campaign")
    p.set_defaults(handler=_callbacks)

    p = ds.add_parser(
        "simulate",
        help="discrete-event simulation of a campaign floor with a pacer",
        description="Simulate a day (per seed) of a scenario with the live pacer.",
    )
    p.add_argument("--scenario", required=True, help="scenario TOML (config/scenarios/)")
    p.add_argument(
        "--pacer", default="predictive", choices=["preview", "progressive", "predictive"]
    )
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--plot", help="write occupancy/abandonment over the day to this PNG")
    p.add_argument("--agents", type=int, help="override the scenario's agent count")
    p.set_defaults(handler=_simulate)


# --------------------------------------------------------------------------- plumbing


async def _prepare(settings: Settings) -> tuple[Any, int]:
    from crm_bridge.db import make_engine, migrate
    from cti.app import version_locations

    url = settings.database_url()
    try:
        await migrate(url, extra_version_locations=version_locations())
    except (OSError, ConnectionError) as e:
        _err(f"cannot reach the database: {e}")
        return None, EXIT_UNREACHABLE
    return make_engine(url), EXIT_OK


def _offline_dialer(engine: Any, settings: Settings) -> Any:
    """A Dialer that is never started: the figures and ledger readers, no pacing."""
    from dialer.engine import Dialer

    async def refuse(server: str, action: Any) -> Any:
        raise RuntimeError("the CLI does not dial")

    return Dialer(
        engine, settings.dialer, originate=refuse, agents_of_queue=lambda q: [], agent_log=True
    )


def _run(coro: Any) -> int:
    return int(asyncio.run(coro))


# --------------------------------------------------------------------------- campaigns


def _campaign_add(args: argparse.Namespace, settings: Settings) -> int:
    return _run(_campaign_add_async(args, settings))


def _spec_fields(args: argparse.Namespace) -> dict[str, Any] | str:
    data: dict[str, Any] = {}
    if args.from_file is not None:
        try:
            text = args.from_file.read_text(encoding="utf-8")
        except OSError as e:
            return f"{args.from_file}: {e.strerror}"
        try:
            if args.from_file.suffix == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except ValueError as e:
            return f"{args.from_file}: {e}"
        if not isinstance(data, dict):
            return f"{args.from_file}: expected a table/object of campaign fields"
    data["name"] = args.name
    data["queue"] = args.queue
    for opt, key in (
        ("mode", "mode"),
        ("caller_id", "caller_id"),
        ("server", "server"),
        ("abandon_cap", "abandon_cap"),
        ("abandon_window", "abandon_window"),
        ("max_ring", "max_ring_seconds"),
        ("safe_harbor", "safe_harbor"),
        ("purpose", "purpose"),
    ):
        v = getattr(args, opt)
        if v is not None:
            data[key] = v
    if args.amd:
        data["amd"] = True
    if args.window:
        start, sep, end = args.window.partition("-")
        if not sep:
            return "--window: use HH:MM-HH:MM"
        data["window_start"], data["window_end"] = start, end
    if args.retry:
        try:
            data["retry"] = json.loads(args.retry)
        except ValueError as e:
            return f"--retry: not JSON ({e})"
    return data


async def _campaign_add_async(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from dialer.campaigns import CampaignError, CampaignService, CampaignSpec

    data = _spec_fields(args)
    if isinstance(data, str):
        _err(data)
        return EXIT_USAGE
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as e:
        for err in e.errors(include_url=False):
            loc = ".".join(str(x) for x in err["loc"]) or "campaign"
            _err(f"{loc}: {err['msg']}")
        return EXIT_USAGE
    engine, code = await _prepare(settings)
    if engine is None:
        return code
    try:
        view = await CampaignService(engine).create(spec)
    except CampaignError as e:
        _err(str(e))
        return EXIT_FAILED
    finally:
        await engine.dispose()
    print(f"campaign {view['name']} created ({view['mode']}, queue {view['queue']}, stopped)")
    return EXIT_OK


def _campaign_list(args: argparse.Namespace, settings: Settings) -> int:
    return _run(_campaign_list_async(args, settings))


async def _campaign_list_async(args: argparse.Namespace, settings: Settings) -> int:
    from dialer.campaigns import CampaignService

    engine, code = await _prepare(settings)
    if engine is None:
        return code
    try:
        rows = await CampaignService(engine).list()
    finally:
        await engine.dispose()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'NAME':<24} {'MODE':<12} {'STATE':<9} {'QUEUE':<16} WINDOW       CAP")
    for r in rows:
        print(
            f"{r['name']:<24} {r['mode']:<12} {r['state']:<9} {r['queue']:<16} "
            f"{r['window_start']}-{r['window_end']}  {r['abandon_cap']:.1%}/{r['abandon_window']}"
        )
    return EXIT_OK


def _campaign_action(args: argparse.Namespace, settings: Settings) -> int:
    return _run(_campaign_action_async(args, settings))


async def _campaign_action_async(args: argparse.Namespace, settings: Settings) -> int:
    from cti import stats
    from dialer.campaigns import CampaignError, CampaignService

    engine, code = await _prepare(settings)
    if engine is None:
        return code
    svc = CampaignService(engine)
    try:
        if args.action == "show":
            view = await svc.get(args.name)
            figs = await stats.campaign_figures(_offline_dialer(engine, settings), args.name)
            view["figures"] = figs[0] if figs else None
            print(json.dumps(view, indent=2, default=str))
        elif args.action == "delete":
            await svc.delete(args.name)
            print(f"campaign {args.name} deleted")
        else:
            state = {"start": "running", "stop": "stopped", "pause": "paused"}[args.action]
            view = await svc.set_state(args.name, state)  # type: ignore[arg-type]
            print(f"campaign {view['name']} is {view['state']}")
    except CampaignError as e:
        _err(str(e))
        return EXIT_USAGE if str(e).startswith("no campaign") else EXIT_FAILED
    finally:
        await engine.dispose()
    return EXIT_OK


# --------------------------------------------------------------------------- import


def _import(args: argparse.Namespace, settings: Settings) -> int:
    return _run(_import_async(args, settings))


async def _import_async(args: argparse.Namespace, settings: Settings) -> int:
    from dialer.importer import import_leads

    if args.batch < 1:
        _err("--batch must be at least 1")
        return EXIT_USAGE
    if not args.file.is_file():
        _err(f"{args.file}: no such file")
        return EXIT_USAGE
    engine, code = await _prepare(settings)
    if engine is None:
        return code
    started = time.monotonic()
    try:
        report = await import_leads(
            engine,
            args.campaign,
            args.file,
            region=settings.crm.default_region,
            default_area=settings.crm.default_area,
            batch=args.batch,
            progress=False if args.no_progress else None,
        )
    except LookupError as e:
        _err(str(e).strip("'\""))
        return EXIT_USAGE
    except ValueError as e:
        _err(f"{args.file}: {e}")
        return EXIT_USAGE
    finally:
        await engine.dispose()
    took = time.monotonic() - started
    print(
        f"{report.imported:,} leads imported, {len(report.rejected):,} rejected, "
        f"{report.duplicates:,} duplicates ({took:.1f} s)",
        file=sys.stderr,
    )
    if report.rejected:
        path = args.report or args.file.with_name(args.file.name + ".rejects.csv")
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["line", "reason"])
            w.writerows(report.rejected)
        print(f"rejected rows (line, reason): {path}", file=sys.stderr)
        for line, reason in report.rejected[:5]:
            print(f"  line {line}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------- figures


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    return _run(_stats_async(args, settings))


def _day_range(since: str | None, until: str | None) -> tuple[float, float] | str:
    try:
        first = (
            datetime.fromisoformat(since).replace(tzinfo=UTC)
            if since
            else datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        )
        last = datetime.fromisoformat(until).replace(tzinfo=UTC) if until else first
    except ValueError:
        return "--from/--to: use YYYY-MM-DD"
    end = last + timedelta(days=1)
    if end <= first:
        return "--to must not be before --from"
    return first.timestamp(), end.timestamp()


async def _stats_async(args: argparse.Namespace, settings: Settings) -> int:
    from cti import stats

    rng = _day_range(args.since, args.until)
    if isinstance(rng, str):
        _err(rng)
        return EXIT_USAGE
    engine, code = await _prepare(settings)
    if engine is None:
        return code
    try:
        d = _offline_dialer(engine, settings)
        if args.csv:
            hist = await stats.history(d, *rng)
            if args.campaign:
                hist["campaigns"] = [c for c in hist["campaigns"] if c["campaign"] == args.campaign]
            sys.stdout.write(stats.history_csv(hist))
            return EXIT_OK
        figs = await stats.campaign_figures(d, args.campaign)
    finally:
        await engine.dispose()
    if args.campaign and not figs:
        _err(f"no campaign named {args.campaign!r}")
        return EXIT_USAGE
    if args.json:
        print(json.dumps(figs, indent=2, default=str))
        return EXIT_OK
    print(
        f"{'CAMPAIGN':<20} {'STATE':<8} {'ATTEMPTS':>8} {'CONNECTS':>8} {'LIVE':>5} "
        f"{'MACH':>5} {'BUSY':>5} {'NOANS':>5} {'ABAND':>5} {'RATE':>6} {'D/C':>5} "
        f"{'LEFT':>6} {'DONE':>6} {'CB-OVERDUE':>10}"
    )
    for f in figs:
        dpc = "-" if f["dials_per_connect"] is None else f"{f['dials_per_connect']:.2f}"
        print(
            f"{f['campaign']:<20} {f['state']:<8} {f['attempts']:>8} {f['connects']:>8} "
            f"{f['live_answers']:>5} {f['machines']:>5} {f['busy']:>5} {f['no_answer']:>5} "
            f"{f['abandoned']:>5} {f['abandon_rate_window']:>6.2%} {dpc:>5} "
            f"{f['leads_remaining']:>6} {f['leads_done']:>6} {f['callbacks']['overdue']:>10}"
        )
    return EXIT_OK


def _callbacks(args: argparse.Namespace, settings: Settings) -> int:
    return _run(_callbacks_async(args, settings))


async def _callbacks_async(args: argparse.Namespace, settings: Settings) -> int:
    from dialer.campaigns import CampaignError, CampaignService

    engine, code = await _prepare(settings)
    if engine is None:
        return code
    try:
        d = _offline_dialer(engine, settings)
        cid = None
        if args.campaign:
            try:
                cid = int((await CampaignService(engine).get(args.campaign))["id"])
            except CampaignError as e:
                _err(str(e))
                return EXIT_USAGE
        rows = await d.leads.callbacks(
            campaign_id=cid, now=time.time(), grace=settings.dialer.callback_grace_minutes * 60
        )
    finally:
        await engine.dispose()
    if args.missed:
        rows = [r for r in rows if r["overdue"] or r["state"] == "missed"]
    print(f"{'ID':>6} {'CAMPAIGN':<16} {'DUE (UTC)':<17} {'AGENT':<14} {'STATE':<9} NUMBER")
    for r in rows:
        due = datetime.fromtimestamp(r["due_at"], UTC).strftime("%Y-%m-%d %H:%M")
        flag = " OVERDUE" if r["overdue"] else ""
        print(
            f"{r['id']:>6} {r['campaign']:<16} {due:<17} {r['agent'] or '(anyone)':<14} "
            f"{r['state']:<9} {r['number']}{flag}"
        )
    return EXIT_OK


# --------------------------------------------------------------------------- simulation


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from dialer.simulation import main

    if args.seeds < 1:
        _err("--seeds must be at least 1")
        return EXIT_USAGE
    if not Path(args.scenario).is_file():
        _err(f"{args.scenario}: no such file")
        return EXIT_USAGE
    return int(main(args.scenario, args.pacer, args.seeds, args.plot, agents=args.agents))
