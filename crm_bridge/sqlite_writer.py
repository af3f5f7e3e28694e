"""A thread of its own, with a plain sqlite3 connection, for the writes on the screen-pop path.

Why: the pop router records every leg of every call (``BuiltinCrm.record_interactions``).
Through SQLAlchemy's async engine each statement was compiled and its rows processed on the
event loop that delivers pops, with one hop to aiosqlite's thread per statement; a batch's
transaction took 10-50 ms of wall time (up to 330 ms) and the pops that fell into it were
the long tail of pop latency. Here the event loop only queues the work; the thread runs a
few sqlite3 calls, which release the GIL while SQLite works, and a little plain Python.

The SQL text, the column defaults and the type conversions come from the SQLAlchemy tables
(once, in :class:`TableSql`), so a row written here is the row the ORM would have written;
the tests hold both paths to the same result. PostgreSQL keeps the SQLAlchemy path.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import structlog
from sqlalchemy import Table
from sqlalchemy.engine import Dialect

log = structlog.get_logger(__name__)

_R = TypeVar("_R")


class TableSql:
    """Statements for one table as sqlite3 runs them, with SQLAlchemy's bind and result
    processing of each column (dates, JSON) and its scalar Python-side defaults."""

    __slots__ = ("_bind", "_defaults", "_result", "columns", "name")

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self.name = table.name
        self.columns = [c.name for c in table.columns]
        self._bind: dict[str, Any] = {}
        self._result: dict[str, Any] = {}
        self._defaults: dict[str, Any] = {}
        for c in table.columns:
            impl = c.type.dialect_impl(dialect)
            self._bind[c.name] = impl.bind_processor(dialect)
            self._result[c.name] = impl.result_processor(dialect, None)
            default = c.default
            if default is not None and getattr(default, "is_scalar", False):
                self._defaults[c.name] = getattr(default, "arg", None)

    def _value(self, name: str, row: Mapping[str, Any]) -> Any:
        v = row[name] if name in row else self._defaults.get(name)
        proc = self._bind[name]
        return v if proc is None else proc(v)  # as SQLAlchemy: None too (JSON stores 'null')

    def select_in(
        self, conn: sqlite3.Connection, columns: Sequence[str], where: Mapping[str, Sequence[Any]]
    ) -> list[dict[str, Any]]:
        """Rows whose columns are each in the given values (ANDed), as processed dicts."""
        conds: list[str] = []
        args: list[Any] = []
        for col, values in where.items():
            conds.append(f"{col} IN ({','.join('?' * len(values))})")
            proc = self._bind[col]
            args.extend(values if proc is None else [proc(v) for v in values])
        sql = f"SELECT {', '.join(columns)} FROM {self.name} WHERE {' AND '.join(conds)}"
        procs = [self._result[c] for c in columns]
        out = []
        for r in conn.execute(sql, args):
            out.append(
                {c: (v if p is None else p(v)) for c, p, v in zip(columns, procs, r, strict=True)}
            )
        return out

    def insert(
        self,
        conn: sqlite3.Connection,
        rows: Sequence[Mapping[str, Any]],
        returning: Sequence[str] = (),
    ) -> list[tuple[Any, ...]]:
        """One multi-row INSERT (with RETURNING when asked; SQLite >= 3.35); every row gets the
        columns of the first row plus the table's scalar defaults."""
        if not rows:
            return []
        cols = [c for c in self.columns if c in rows[0] or c in self._defaults]
        one = f"({','.join('?' * len(cols))})"
        sql = f"INSERT INTO {self.name} ({', '.join(cols)}) VALUES {','.join([one] * len(rows))}"
        if returning:
            sql += f" RETURNING {', '.join(returning)}"
        value = self._value
        args = [value(c, row) for row in rows for c in cols]
        return conn.execute(sql, args).fetchall()

    def update_by(
        self, conn: sqlite3.Connection, key: str, params: Sequence[Mapping[str, Any]]
    ) -> None:
        """UPDATE ... WHERE id = params[key], one statement for parameter sets alike in keys."""
        if not params:
            return
        cols = [c for c in params[0] if c != key]
        sql = f"UPDATE {self.name} SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?"
        value = self._value
        conn.executemany(sql, [[value(c, p) for c in cols] + [p[key]] for p in params])


class SqliteWriter:
    """Runs write transactions on one sqlite3 connection in one thread, in submission order.

    The thread starts with the first transaction and ends with :meth:`close`.
    """

    def __init__(self, database: str, busy_timeout_ms: int) -> None:
        self._database = database
        self._busy_ms = busy_timeout_ms
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._database, isolation_level=None, check_same_thread=False)
        # the same settings as the SQLAlchemy engine's connections (crm_bridge/db.py)
        for pragma in (
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={int(self._busy_ms)}",
            "PRAGMA cache_size=-65536",
            "PRAGMA temp_store=MEMORY",
        ):
            conn.execute(pragma)
        return conn

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, loop, fut = job
            result: Any = None
            error: BaseException | None = None
            try:
                if conn is None:
                    conn = self._connect()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except BaseException as e:  # handed to the caller, raised there
                error = e
                if isinstance(e, sqlite3.DatabaseError) and not isinstance(
                    e, sqlite3.IntegrityError
                ):
                    _close_quietly(conn)  # opened anew for the next transaction
                    conn = None
            try:
                loop.call_soon_threadsafe(_settle, fut, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
        if conn is not None:
            conn.close()

    async def transaction(self, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        """``fn(conn)`` inside BEGIN IMMEDIATE ... COMMIT on the writer thread (ROLLBACK if it
        raises; its exception is raised here)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="crm-writer", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_R] = loop.create_future()
        self._jobs.put((fn, loop, fut))
        return await fut

    async def close(self) -> None:
        """Finish the queued transactions, then stop the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(thread.join, 30.0)


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the caller was cancelled; the transaction ran (or failed) regardless
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
