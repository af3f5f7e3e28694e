"""The `cti` command.

Each group of subcommands lives in its own `cti/cli_*.py` module exposing
`register(subparsers)`; every subcommand sets `handler(args, settings) -> int` with
`parser.set_defaults(handler=...)`. Settings are loaded once here, so a bad setting stops
every subcommand the same way.

Exit codes: 0 success; 1 the command failed (a message says why); 2 usage error or invalid
settings; 3 a peer could not be reached (Asterisk, database); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import structlog

from cti.logs import configure_logging
from cti.settings import SettingsError, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: modules contributing subcommands, in the order `--help` lists them
_GROUPS = ("cti.cli_server", "cti.cli_ami", "cti.cli_agents", "cti.cli_crm", "cti.cli_dialer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cti",
        description=(
            "CTI server for Asterisk contact centers: screen pops from the CRM, agent "
            "desktop, outbound campaigns and utilization figures."
        ),
        epilog="Exit codes: 0 ok, 1 failed, 2 usage or invalid settings, 3 peer unreachable, "
        "130 interrupted. Settings: config/cti.toml, --config FILE, CTI_* variables.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="settings file (TOML) layered over config/cti.toml"
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override log.level"
    )
    parser.add_argument(
        "--log-format", choices=["auto", "json", "console"], help="override log.format"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue  # a capability not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = load_settings(args.config)
    except SettingsError as e:
        print(f"cti: {e}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level or settings.log.level, args.log_format or settings.log.format)
    try:
        return int(args.handler(args, settings) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SettingsError as e:
        print(f"cti: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:
        structlog.get_logger("cti").exception("command failed", command=args.command)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
