"""`cti agents add|list|passwd|disable|enable`: manage who may log in to the CTI.

The first admin has to come from somewhere before the API can be used: this command works on
the database directly (migrating it first), so it also serves for recovery (a forgotten admin
password). Passwords are read from a terminal prompt or, for scripts, one line on standard input
(--password-stdin); never from the command line, where `ps` and shell history would show them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from cti.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agents",
        help="manage CTI accounts (agents, supervisors, admins)",
        description="Create and manage the accounts that log in to the CTI (agent desktop, "
        "supervisor dashboard, API). Works on the database directly.",
    )
    actions = p.add_subparsers(dest="agents_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="create an account", description="Create an account.")
    add.add_argument("username", help="login name (letters, digits, . _ @ -)")
    add.add_argument("--role", choices=["agent", "supervisor", "admin"], default="agent")
    add.add_argument("--name", default="", help="display name shown on screens")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add.set_defaults(handler=_add)

    ls = actions.add_parser("list", help="list accounts", description="List accounts.")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(handler=_list)

    pw = actions.add_parser("passwd", help="set an account's password")
    pw.add_argument("username")
    pw.add_argument("--password-stdin", action="store_true")
    pw.set_defaults(handler=_passwd)

    dis = actions.add_parser("disable", help="stop an account from logging in")
    dis.add_argument("username")
    dis.set_defaults(handler=_disable)

    en = actions.add_parser("enable", help="allow a disabled account to log in again")
    en.add_argument("username")
    en.set_defaults(handler=_enable)


class _Usage(Exception):
    pass


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise _Usage("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise _Usage("the passwords do not match")
    return first


def _run(settings: Settings, work: Any) -> int:
    """Migrate, open the store, run `work(store) -> int`, map failures to exit codes."""
    from sqlalchemy.exc import DBAPIError

    from crm_bridge.db import make_engine
    from cti.accounts import AccountError, AccountStore
    from cti.migrations import migrate

    async def main() -> int:
        url = settings.database_url()
        await migrate(url)
        engine = make_engine(url)
        try:
            return int(await work(AccountStore(engine)))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except AccountError as e:
        print(f"cti agents: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, DBAPIError) as e:
        print(f"cti agents: database unreachable: {type(e).__name__}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from cti.accounts import check_password, normalize_username

    try:
        normalize_username(args.username)
        password = _read_password(args.password_stdin)
        check_password(password)
    except _Usage as e:
        print(f"cti agents add: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:  # AccountError
        print(f"cti agents add: {e}", file=sys.stderr)
        return EXIT_FAILED

    async def work(store: Any) -> int:
        p = await store.create(args.username, password, role=args.role, display_name=args.name)
        print(f"created {p.role} {p.username} (id {p.agent_id})")
        return EXIT_OK

    return _run(settings, work)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Any) -> int:
        views = await store.list()
        if args.json:
            for v in views:
                print(json.dumps(v.to_dict()))
            return EXIT_OK
        if not views:
            print("no accounts yet: create one with `cti agents add USERNAME --role admin`")
            return EXIT_OK
        rows = [("USERNAME", "ROLE", "NAME", "STATE", "ID")] + [
            (v.username, v.role, v.display_name, "disabled" if v.disabled else "active", v.agent_id)
            for v in views
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        return EXIT_OK

    return _run(settings, work)


def _by_name(command: str, username: str, action: Any) -> Any:
    async def work(store: Any) -> int:
        view = await store.by_username(username)
        if view is None:
            print(f"cti agents {command}: no account named {username!r}", file=sys.stderr)
            return EXIT_FAILED
        return int(await action(store, view))

    return work


def _passwd(args: argparse.Namespace, settings: Settings) -> int:
    from cti.accounts import check_password

    try:
        password = _read_password(args.password_stdin)
        check_password(password)
    except _Usage as e:
        print(f"cti agents passwd: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:
        print(f"cti agents passwd: {e}", file=sys.stderr)
        return EXIT_FAILED

    async def action(store: Any, view: Any) -> int:
        await store.set_password(view.agent_id, password)
        print(f"password of {view.username} changed")
        return EXIT_OK

    return _run(settings, _by_name("passwd", args.username, action))


def _set_disabled(command: str, disabled: bool) -> Any:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        async def action(store: Any, view: Any) -> int:
            await store.disable(view.agent_id, disabled)
            print(f"{view.username} {'disabled' if disabled else 'enabled'}")
            return EXIT_OK

        return _run(settings, _by_name(command, args.username, action))

    return handler


_disable = _set_disabled("disable", True)
_enable = _set_disabled("enable", False)
