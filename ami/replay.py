"""`cti replay`: feed a recorded AMI trace to the call tracker and print the call events.

The same tracker code serves live traffic, replay and tests, so a replay is the quickest way
to see what the server would have told agents about a recorded session.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from ami.events import CallEvent
from ami.settings import TrackerSettings
from ami.trace import iter_trace
from ami.tracker import CallTracker


def replay_events(data: bytes, tracker: CallTracker) -> Iterable[CallEvent]:
    """Every event the tracker derives from a trace, in order, then what a flush reports."""
    for at, msg in iter_trace(data):
        yield from tracker.feed(msg, at)
    yield from tracker.flush()


def _details(d: dict[str, Any]) -> str:
    def who(p: dict[str, Any] | None) -> str:
        if p is None:
            return "-"
        num = p.get("number") or "?"
        return f"{num} ({p['channel']})"

    ev = d["event"]
    if ev == "ringing":
        s = f"{who(d['caller'])} -> " + ", ".join(who(t) for t in d["targets"])
        if d.get("queue"):
            s += f" queue={d['queue']}"
        if d.get("variables"):
            s += " " + " ".join(f"{k}={v}" for k, v in d["variables"].items())
        return s
    if ev == "ringing_end":
        return f"{', '.join(who(t) for t in d['targets'])}: {d['reason']}"
    if ev == "up":
        return f"{who(d['caller'])} <-> {who(d['callee'])}"
    if ev == "transfer":
        return f"{d['kind']}: {who(d['caller'])} by {who(d['transferer'])} to " + ", ".join(
            who(t) for t in d["targets"]
        )
    if ev == "hangup":
        return f"{who(d['caller'])} {d['reason']} (cause {d['cause']})"
    if ev == "queue_abandon":
        return f"{who(d['caller'])} left queue {d['queue']}"
    if ev == "user_event":
        return " ".join(f"{k}={v}" for k, v in d["fields"].items())
    if ev == "originate_result":
        s = f"{d['action_id']}: {d['result']} (cause {d['cause']})"
        if d.get("variables"):
            s += " " + " ".join(f"{k}={v}" for k, v in d["variables"].items())
        return s
    return ""


def write_events(events: Iterable[CallEvent], out: TextIO, *, jsonl: bool) -> int:
    n = 0
    if not jsonl:
        out.write(f"{'time':>10}  {'call id':<24} {'event':<16} details\n")
    for ev in events:
        d = ev.to_dict()
        if jsonl:
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
        else:
            out.write(f"{d['at']:>10.3f}  {d['call_id']:<24} {d['event']:<16} {_details(d)}\n")
        n += 1
    return n


def run_replay(path: str, *, jsonl: bool, tracker_settings: TrackerSettings) -> int:
    """Exit code 0 when the trace was read, 1 when it could not be (message on stderr)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as e:
        print(f"cti replay: cannot read {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    tracker = CallTracker(local_endpoints=tracker_settings.local_endpoints)
    try:
        write_events(replay_events(data, tracker), sys.stdout, jsonl=jsonl)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`cti replay x | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    if tracker.stats.errors:
        print(
            f"cti replay: {tracker.stats.errors} message(s) could not be handled (see log)",
            file=sys.stderr,
        )
    return 0
