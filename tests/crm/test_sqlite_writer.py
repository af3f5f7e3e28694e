"""The SQLite writer thread (crm_bridge/sqlite_writer.py): transactions in order, all or
nothing, errors raised to the caller, and the event loop free while the database is busy."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crm_bridge.sqlite_writer import SqliteWriter


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "w.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (n INTEGER NOT NULL)")
    conn.commit()
    conn.close()
    return path


def _rows(path: str) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY rowid")]
    finally:
        conn.close()


async def test_transactions_run_in_order_and_close_waits_for_them(db: str) -> None:
    w = SqliteWriter(db, busy_timeout_ms=1000)

    def put(n: int) -> Callable[[sqlite3.Connection], int]:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("INSERT INTO t VALUES (?) RETURNING n", (n,)).fetchone()[0])

        return run

    answers = await asyncio.gather(*(w.transaction(put(n)) for n in range(20)))
    assert answers == list(range(20))
    pending = [asyncio.ensure_future(w.transaction(put(n))) for n in range(20, 25)]
    await asyncio.sleep(0)
    await w.close()
    assert _rows(db) == list(range(25))
    assert [f.result() for f in pending] == list(range(20, 25))


async def test_a_failing_transaction_writes_nothing_and_raises_here(db: str) -> None:
    w = SqliteWriter(db, busy_timeout_ms=1000)

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await w.transaction(half_then_fail)
    with pytest.raises(sqlite3.IntegrityError):
        await w.transaction(lambda conn: conn.execute("INSERT INTO t VALUES (NULL)"))
    with pytest.raises(sqlite3.OperationalError):
        await w.transaction(lambda conn: conn.execute("INSERT INTO missing VALUES (1)"))
    await w.transaction(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))
    await w.close()
    assert _rows(db) == [2]


async def test_the_event_loop_runs_while_the_writer_waits_for_the_lock(db: str) -> None:
    w = SqliteWriter(db, busy_timeout_ms=5000)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock for 0.3 s
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, other.execute, "COMMIT")
    t0 = time.monotonic()
    await w.transaction(lambda conn: conn.execute("INSERT INTO t VALUES (7)"))
    waited = time.monotonic() - t0
    t.cancel()
    other.close()
    await w.close()
    assert waited >= 0.25
    assert ticks >= 10  # the loop kept running while the writer thread waited
    assert _rows(db) == [7]
