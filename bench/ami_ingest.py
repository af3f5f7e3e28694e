"""AMI ingest benchmark: a real recorded burst through our framing + call tracker, beside the
raw parse rate of panoramisk 1.4 on the same bytes.

A 50-call burst from Asterisk arrives at 20-30k messages/s; the target is >= 50,000 messages/s
end to end on one core, so one server process keeps up with bursts with room to spare.
"Events" here are AMI messages ingested (the unit Asterisk produces), not call events out.

    .venv/bin/python bench/ami_ingest.py            # default: 3 s per measurement
    .venv/bin/python bench/ami_ingest.py --quick    # a short run for a smoke check

The last line printed is one JSON object with events_per_s, us_per_event and
panoramisk_events_per_s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ami.framing import AmiParser  # noqa: E402
from ami.trace import wire_bytes  # noqa: E402
from ami.tracker import CallTracker  # noqa: E402

TRACE = ROOT / "tests" / "traces" / "10-burst-50-originates.ami"
LAB_ENDPOINTS = ("Local/*@inbound-*;1", "Local/*@agents-*;2", "Local/*@pstn-*;2")
CHUNK = 4096  # bytes per simulated TCP read


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def ours(chunks: list[bytes]) -> tuple[int, int]:
    """One pass: framing + tracker, fresh state as a new connection would have."""
    parser = AmiParser()
    tracker = CallTracker(local_endpoints=LAB_ENDPOINTS, server="bench")
    feed = tracker.feed
    n = 0
    ev = 0
    at = 0.0
    for chunk in chunks:
        for msg in parser.feed(chunk):
            n += 1
            ev += len(feed(msg, at))
        at += 0.001
    ev += len(tracker.flush())
    return n, ev


def panoramisk_parse(chunks: list[bytes]) -> tuple[int, int]:
    """panoramisk's own receive path without a socket: its protocol's data_received splits
    the stream and builds a Message per frame (Message.from_line); handle_message is replaced
    by a counter so that no dispatch or futures are involved (a lower bound on its cost)."""
    from panoramisk.ami_protocol import AMIProtocol

    count = [0]

    class _Counting(AMIProtocol):
        def handle_message(self, message: object) -> None:
            count[0] += 1

    proto = _Counting.__new__(_Counting)
    proto.version = None
    proto.encoding = "utf-8"

    class _Factory:
        save_stream = None

    proto.factory = _Factory()
    import collections
    import logging

    proto.queue = collections.deque()
    proto.log = logging.getLogger("panoramisk.bench")
    for chunk in chunks:
        proto.data_received(chunk)
    return count[0], 0


def measure(
    fn: Callable[[list[bytes]], tuple[int, int]],
    chunks: list[bytes],
    seconds: float,
    max_loops: int,
) -> tuple[float, float, int, int, int]:
    """Rates use this process's CPU time (the target is per core; on a shared machine wall
    time also counts other processes' turns); wall time is shown beside it."""
    fn(chunks)  # warm up
    loops = 0
    msgs = 0
    events = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while loops < max_loops:
        n, ev = fn(chunks)
        msgs += n
        events += ev
        loops += 1
        if time.perf_counter() >= deadline:
            break
    return time.process_time() - c0, time.perf_counter() - t0, loops, msgs, events


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (0.3 s per measurement)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--max-loops", type=int, default=2000, help="upper bound on trace passes")
    args = ap.parse_args(argv)
    seconds = 0.3 if args.quick else args.seconds
    data = wire_bytes(TRACE)
    chunks = _chunks(data)

    cpu, wall, loops, msgs, events = measure(ours, chunks, seconds, args.max_loops)
    rate = msgs / cpu
    pcpu, pwall, ploops, pmsgs, _ = measure(panoramisk_parse, chunks, seconds, args.max_loops)
    prate = pmsgs / pcpu

    print(f"trace: {TRACE.name}, {len(data)} bytes, {msgs // loops} AMI messages per pass")
    print(f"{'path':<30} {'passes':>7} {'messages/s':>11} {'us/message':>11} {'wall msg/s':>11}")
    for label, n, r, m, w in (
        ("framing + tracker (ours)", loops, rate, msgs, wall),
        ("panoramisk 1.4 parse only", ploops, prate, pmsgs, pwall),
    ):
        print(f"{label:<30} {n:>7} {r:>11,.0f} {1e6 / r:>11.2f} {m / w:>11,.0f}")
    print(
        f"call events out per pass: {events // loops}; per-core target >= 50,000 messages/s: "
        f"{'met' if rate >= 50_000 else 'NOT met'}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        json.dumps(
            {
                "events_per_s": round(rate),
                "us_per_event": round(1e6 / rate, 3),
                "panoramisk_events_per_s": round(prate),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
