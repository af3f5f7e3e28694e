"""Bringing a SQLite CRM file into the operating system's page cache at daemon start.

Why: the built-in store answers screen-pop lookups with synchronous reads on the event loop
(see ``BuiltinCrm._make_reader``). That is the fastest path while the pages are in memory,
and the worst one when they are not: after a reboot, or on a host whose cache was taken by
something else, each lookup of a 1,000,000-customer file read from disk for 100-300 ms and
held every other pop behind it (measured: pop p99 above one second in the first minute).
So the store reads off the loop until this preload has finished, then switches to inline
reads. The read runs in a worker thread; file reads and SQLite's page reads release the
GIL, so the event loop keeps delivering pops meanwhile.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: read in pieces of this size: large enough for the kernel's read-ahead, small enough that a
#: cancelled start stops quickly
CHUNK = 4 << 20

#: covering scans that touch only the indexes a lookup walks, for files too big to read whole
INDEX_SCANS = (
    "SELECT count(*) FROM crm_phone INDEXED BY ix_crm_phone_lookup WHERE e164 > ''",
    "SELECT count(*) FROM crm_email INDEXED BY ix_crm_email_lookup WHERE email > ''",
    "SELECT count(*) FROM crm_external_id WHERE value > ''",
    "SELECT count(*) FROM crm_customer",
)


@dataclass(frozen=True, slots=True)
class Preloaded:
    """What the preload did, for the start-up log line."""

    mode: str  # "file" (read whole), "indexes" (too big: lookup indexes only), "none"
    bytes_read: int
    seconds: float


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _read_file(path: Path, deadline: float, stop: threading.Event) -> int:
    done = 0
    buf = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as f:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while time.monotonic() < deadline and not stop.is_set():
            n = f.readinto(buf)
            if not n:
                break
            done += n
    return done


def preload(
    database: str, limit_bytes: int, stop: threading.Event, time_limit: float = 120.0
) -> Preloaded:
    """Read the database file (and its WAL) whole when it is at most ``limit_bytes`` and at
    most half the available memory; otherwise walk only the lookup indexes. Blocking: run it
    in a thread. Stops after ``time_limit`` seconds whatever is left (a slow disk must not
    keep the daemon on its slow path forever: what is not cached by then is read on demand),
    or as soon as ``stop`` is set (the daemon is stopping).
    """
    t0 = time.monotonic()
    deadline = t0 + time_limit
    path = Path(database)
    try:
        size = path.stat().st_size
    except OSError:
        return Preloaded("none", 0, 0.0)
    wal = Path(f"{database}-wal")
    avail = available_memory()
    fits = size <= limit_bytes and (avail is None or size <= avail // 2)
    if fits:
        done = _read_file(path, deadline, stop)
        if wal.exists():
            done += _read_file(wal, deadline, stop)
        return Preloaded("file", done, time.monotonic() - t0)
    if limit_bytes <= 0:
        return Preloaded("none", 0, 0.0)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.set_progress_handler(lambda: int(stop.is_set() or time.monotonic() > deadline), 10_000)
        for sql in INDEX_SCANS:
            try:
                conn.execute(sql).fetchone()
            except sqlite3.OperationalError:  # interrupted, or an index renamed by a migration
                if stop.is_set() or time.monotonic() > deadline:
                    break
    finally:
        conn.close()
    return Preloaded("indexes", 0, time.monotonic() - t0)
