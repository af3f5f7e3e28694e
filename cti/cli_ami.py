"""`cti replay` and `cti simulate-pbx`."""

from __future__ import annotations

import argparse
from typing import Any

from cti.settings import Settings, with_overrides


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="feed a recorded AMI trace to the call tracker and print the call events",
        description="Read raw AMI text (Key: Value lines, blank line between messages, "
        "'# t=<seconds>' annotations) and print the call-level events the tracker derives.",
    )
    p.add_argument("file", help="AMI trace file (*.ami); '-' reads standard input")
    p.add_argument(
        "--jsonl", action="store_true", help="one JSON object per line (default: a table)"
    )
    p.set_defaults(handler=_replay)

    p = sub.add_parser(
        "simulate-pbx",
        help="run the built-in AMI server that behaves like Asterisk 22 for a contact center",
        description="Serve AMI on TCP with generated inbound queue calls and outbound outcomes.",
    )
    p.add_argument("--host", help="listen address (default: simulator.host)")
    p.add_argument("--port", type=int, help="listen port (default: simulator.port)")
    p.add_argument("--seed", type=int, help="random seed (default: simulator.seed)")
    p.add_argument("--inbound-per-minute", type=float, help="generated inbound calls per minute")
    p.add_argument(
        "--time-scale", type=float, help="run the clock this many times faster (tests, demos)"
    )
    p.set_defaults(handler=_simulate)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from ami.replay import run_replay

    return run_replay(args.file, jsonl=args.jsonl, tracker_settings=settings.ami.tracker)


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from ami.simulator import run_simulator

    updates = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "seed": args.seed,
            "inbound_per_minute": args.inbound_per_minute,
            "time_scale": args.time_scale,
        }.items()
        if v is not None
    }
    return run_simulator(with_overrides(settings, {"simulator": updates}).simulator)
