"""The SQLite side of `cti crm import`: batches parsed in parallel, written in file order.

Why it is built this way (measured with ``bench/crm_lookup.py``, 200,000 rows, 2 cores):

* **Binding, not b-trees, was the cost.** sqlite3's ``executemany`` spends about 0.5 µs of
  Python per bound value, more than SQLite's own index work. Each batch is therefore bound
  into a staging database in memory, attached to the worker's own connection, *before* the
  write lock is taken; under the lock, ``INSERT ... SELECT`` moves it into the store in C,
  and the duplicate check is a join of the staged keys against the store's indexes.
* **Parse in parallel, write in order.** The file is cut into ranges of whole lines
  (:func:`split_ranges`). Each worker (one process per core, spawned) parses and stages a
  range, then waits for its turn: range k commits before range k+1 writes. So the
  duplicate check of k+1 sees everything k wrote, and a committed range is a prefix of the
  file, which keeps ``--resume`` exact. While one worker holds the lock the other parses,
  and the work splits itself evenly between the cores (no fixed reader/writer roles whose
  costs would have to match).
* **Foreign keys are checked once per batch, not per row**: every child row points at a
  customer the same batch writes, with ids the loader assigns under the write lock; the
  custom field ids are checked with one query.

The coordinator (the import's state file, reports and crash points) is
:class:`crm_bridge.importer.Importer`; this module only knows SQLite.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import gc
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, compress, repeat
from multiprocessing.connection import Connection
from operator import is_not, itemgetter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from crm_bridge.batchparse import ColumnParser, Columns
from crm_bridge.batchrules import (
    NAME_COLUMNS,
    dedupe,
    reject_row,
    sqlite_datetime,
)
from crm_bridge.csvio import Layout, RowParser, is_blank, unreadable
from crm_bridge.customfields import FieldDef

if TYPE_CHECKING:  # the worker processes need neither (each import costs their start-up)
    from sqlalchemy import Index
    from sqlalchemy.ext.asyncio import AsyncEngine

#: bound rows per INSERT statement when staging: one statement, many rows, fewer calls
_ROWS_PER_STATEMENT = 100
#: WAL pages (4 KiB) at which a loader's commit checkpoints itself (see Checkpointer)
WAL_CHECKPOINT_PAGES = 32_768


@dataclass(frozen=True, slots=True)
class Range:
    """Whole lines of the input: bytes [start, end), lines line+1 .. end_line."""

    start: int
    end: int
    line: int
    end_line: int


def split_ranges(
    f: IO[bytes], start: int, line: int, lines: int | Callable[[int, int, int], int]
) -> Iterator[Range]:
    """Cut the file from ``start`` into ranges of about ``lines`` lines, each ending where a
    record ends. ``lines`` may be a plan instead: (range number, bytes and lines cut so
    far) -> lines of the next range.

    A line break inside a quoted field does not end a record: the quote characters seen
    since the range's start are counted and a range is only cut where their number is even
    (an escaped quote ``""`` counts twice). Ranges are found with ``bytes.find`` and
    ``bytes.count`` only; the csv module sees each range whole, in its worker. For a
    malformed file (a bare carriage return, a quote inside an unquoted field) every line is
    still read exactly once; its rejects may group lines differently than one pass would.
    """
    f.seek(start)
    buf = b""
    base = start  # file offset of buf[0]
    eof = False
    k = 0
    first_line = line
    while True:
        # a range: `need` line ends from buf[0], then more while the quotes are unbalanced
        need = lines if isinstance(lines, int) else lines(k, base - start, line - first_line)
        pos, n, need = 0, 0, max(need, 1)
        quotes = 0
        counted = 0  # quotes counted up to buf[counted]
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if eof:
                    pos = len(buf)
                    if pos > 0 and not buf.endswith(b"\n"):
                        n += 1  # the last line has no line break
                    break
                more = f.read(1 << 20)
                if not more:
                    eof = True
                else:
                    buf += more
                continue
            pos, n = nl + 1, n + 1
            if n >= need:
                quotes += buf.count(b'"', counted, pos)
                counted = pos
                if quotes % 2 == 0:
                    break
        if pos == 0:
            return
        yield Range(base, base + pos, line, line + n)
        base += pos
        line += n
        k += 1
        buf = buf[pos:]


def ramped(lines: int, size: int) -> Callable[[int, int, int], int]:
    """A plan for :func:`split_ranges` on a file of ``size`` bytes (from where it starts):
    ranges of ``lines`` lines, but a quarter of that for the first one and for the last
    ones. Two workers start parsing together; with equal first ranges the second one would
    finish with nothing to do until the first one's write is over. At the end, the very last
    write runs while the other worker has nothing left, so it should be short."""
    small = max(lines // 4, 1)

    def plan(k: int, done_bytes: int, done_lines: int) -> int:
        if k == 0:
            return small
        left = (size - done_bytes) * done_lines / max(done_bytes, 1)  # lines, estimated
        return small if left < lines else lines

    return plan


#: (first line, last line, fields, error) of a record
RecordTuple = tuple[int, int, list[str], str]


def records(data: bytes, line: int, delimiter: str = ",") -> Iterator[RecordTuple]:
    """(first line, last line, fields, error) of each record of a range starting after
    ``line``: the records :class:`~crm_bridge.csvio.CsvSource` reads (a test holds them
    equal), without its per-line bookkeeping, which a range does not need (no byte offsets:
    a range is committed whole). Bad UTF-8 becomes surrogate escapes, which the row parser
    rejects with the byte; blank lines are skipped."""
    text = data.decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline="\n"), delimiter=delimiter, strict=False)
    while True:
        before = reader.line_num
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield line + before + 1, line + reader.line_num, [], unreadable(e)
            continue
        if is_blank(fields):
            continue
        yield line + before + 1, line + reader.line_num, fields, ""


@dataclass(slots=True)
class RangeRecords:
    """The records of a range, readable and not."""

    lines: list[int]  #: first line of each readable record
    end_lines: list[int]  #: its last line
    rows: list[list[str]]  #: its fields
    unreadable: list[tuple[int, int, str]]  #: (first line, last line, reason)
    clean: bool  #: no control character and no bad UTF-8 anywhere in the range


#: every byte but the control characters csvio.BAD_TEXT refuses
_NOT_CONTROL = bytes(b for b in range(256) if not (b <= 8 or b in (11, 12) or 14 <= b <= 31))


def read_records(data: bytes, line: int, delimiter: str = ",") -> RangeRecords:
    """The records of :func:`records`, as lists.

    The usual file has one record per line. Then the csv module reads the whole range in
    one call and the lines are counted instead of tracked record by record, which is what
    :func:`records` costs. A quoted line break, a carriage return not followed by a line
    feed or a record the csv module refuses sends the range through :func:`records`.
    """
    try:
        text = data.decode("utf-8")
        # a control character is an ASCII byte; bad UTF-8 made the decoding fail
        clean = not data.translate(None, _NOT_CONTROL)
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
        clean = False
    if text.count("\r") == text.count("\r\n"):
        try:
            rows = list(csv.reader(io.StringIO(text, newline="\n"), delimiter=delimiter,
                                   strict=False))  # fmt: skip
        except csv.Error:
            rows = None
        in_lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        if rows is not None and len(rows) == in_lines:
            lines = list(range(line + 1, line + 1 + len(rows)))
            blank = [k for k, row in enumerate(rows) if len(row) <= 1 and is_blank(row)]
            if blank:
                keep = [True] * len(rows)
                for k in blank:
                    keep[k] = False
                rows = list(compress(rows, keep))
                lines = list(compress(lines, keep))
            return RangeRecords(lines, lines, rows, [], clean)
    firsts: list[int] = []
    lasts: list[int] = []
    fields: list[list[str]] = []
    bad: list[tuple[int, int, str]] = []
    for first, last, row, error in records(data, line, delimiter):
        if error:
            bad.append((first, last, error))
        else:
            firsts.append(first)
            lasts.append(last)
            fields.append(row)
    return RangeRecords(firsts, lasts, fields, bad, clean)


# ---------------------------------------------------------------------------------------------
# one worker's loader


@dataclass(slots=True)
class Staged:
    """What the coordinator needs of a parsed range (the rows stay in the worker)."""

    first_line: int
    count: int  #: records read (valid, rejected)
    end_offset: int
    end_line: int
    valid: int
    rejects: list[list[Any]]


@dataclass(slots=True)
class Written:
    """A range written (not yet committed)."""

    merges: list[list[Any]]
    dropped: int
    customer_ids: list[int]  #: first and last id written ([] when none)


#: the customer columns that take few distinct values: staged once per combination (a
#: "profile") and joined back, instead of bound again for every row (binding a value costs
#: more than SQLite's join)
_PROFILE = ("kind", "country", "segment", "vip", "language", "time_zone")
#: (staging table, its columns) in the order the loader writes them
_STAGE = {
    "s_customer": ("r", "profile", "name", *NAME_COLUMNS, "street", "postcode", "city"),
    "s_profile": ("id INTEGER PRIMARY KEY", *_PROFILE),
    "s_phone": ("r", "raw", "e164", "extension", "kind", "position"),
    "s_email": ("r", "email", "position"),
    "s_xid": ("r", "id_type", "value"),
    "s_text": ("r", "field_id", "v"),
    "s_num": ("r", "field_id", "v"),
    "s_date": ("r", "field_id", "v"),
    "s_bool": ("r", "field_id", "v"),
    "s_drop": ("r",),
}  # fmt: skip


class SqliteLoader:
    """Parses ranges of one file and writes them into one SQLite store, on its own connection.

    Used through three calls per range: :meth:`prepare` (no lock held), :meth:`write` (takes
    the write lock, writes, leaves the transaction open) and :meth:`commit` or
    :meth:`rollback`. Not thread-safe; one instance per worker.
    """

    def __init__(
        self,
        db_path: str,
        csv_path: str,
        delimiter: str,
        layout: Layout,
        fields: dict[str, FieldDef],
        field_ids: dict[str, int],
        region: str,
        default_area: str,
        actor: str,
        statements: dict[str, Any],
        busy_timeout_ms: int = 60_000,
    ) -> None:
        self.parser = RowParser(layout, fields, region=region, default_area=default_area)
        self.columns = ColumnParser(self.parser)
        self.field_ids = field_ids
        self.actor = actor
        self.file_name = csv_path.rsplit("/", 1)[-1]
        self.delimiter = delimiter
        self._csv = open(csv_path, "rb")
        db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self.db = db
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        db.execute("PRAGMA cache_size=-65536")
        db.execute("PRAGMA temp_store=MEMORY")
        # checkpoint at 128 MiB of WAL instead of 4 MiB: the pool's Checkpointer copies the
        # pages meanwhile, off the write turns; this only bounds the WAL
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        # checked per batch instead, see the module docstring
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("ATTACH DATABASE ':memory:' AS stage")
        for table, cols in _STAGE.items():
            db.execute(f"CREATE TABLE stage.{table} ({', '.join(cols)})")
        self._sql = statements
        self._staged: _Batch | None = None

    # ---- parsing (no lock) ------------------------------------------------------------------

    def prepare(self, rng: Range) -> Staged:
        """Read, validate and stage one range."""
        f = self._csv
        f.seek(rng.start)
        data = f.read(rng.end - rng.start)
        got = read_records(data, rng.line, self.delimiter)
        lines, rows, unreadable = got.lines, got.rows, got.unreadable
        cols = self.columns.parse(lines, got.end_lines, rows, got.clean)
        name_of = self.parser.name_of
        rejects = [[first, reason, ""] for first, _, reason in unreadable]
        rejects += [reject_row(first, last, name_of(fields), err)
                    for first, last, fields, err in cols.rejects]  # fmt: skip
        if unreadable and cols.rejects:
            rejects.sort(key=itemgetter(0))  # each list is in file order
        starts = lines[:1] + [u[0] for u in unreadable[:1]]
        first_line = min(starts) if starts else rng.line + 1

        rs = range(len(cols))
        cu = cols.customer
        combos = list(zip(*(cu[c] for c in _PROFILE), strict=True))
        profile = {combo: k for k, combo in enumerate(dict.fromkeys(combos))}
        cust = list(chain.from_iterable(zip(
            rs, map(profile.__getitem__, combos), *(cu[c] for c in _STAGE["s_customer"][2:]),
            strict=True)))  # fmt: skip
        phones: list[Any] = []
        for pc in cols.phones:
            has = list(map(is_not, pc.e164, repeat(None)))
            phones += _where(has, rs, pc.raw, pc.e164, pc.extension, pc.kind, pc.position)
        emails: list[Any] = []
        for ec in cols.emails:
            has = list(map(is_not, ec.address, repeat(None)))
            emails += _where(has, rs, ec.address, ec.position)
        xids: list[Any] = []
        for typ, values in cols.ids:
            xids += _sparse(rs, typ, values, "")
        custom: dict[str, list[Any]] = {t: [] for t in _CUSTOM_STAGE.values()}
        for name, typ, values in cols.custom:
            custom[_CUSTOM_STAGE[typ]] += _sparse(rs, self.field_ids[name], values, None)
        # the duplicates within the range, as if the store had none of its keys (the write
        # redoes this only when the store does have some); usually there are none
        merges: list[list[Any]] = []
        dropped: set[int] = set()
        if cols.has_duplicate_keys():
            dropped = dedupe(cols.keyed(), {}, merges)
        db = self.db
        for table in _STAGE:
            db.execute(f"DELETE FROM stage.{table}")
        self._stage("s_customer", cust)
        self._stage("s_profile", [v for combo, k in profile.items() for v in (k, *combo)])
        self._stage("s_phone", phones)
        self._stage("s_email", emails)
        self._stage("s_xid", xids)
        for table, flat in custom.items():
            self._stage(table, flat)
        self._staged = _Batch(cols, dropped, merges, first_line, rng.end_line)
        return Staged(first_line, len(rows) + len(unreadable), rng.end, rng.end_line,
                      len(cols), rejects)  # fmt: skip

    def _stage(self, table: str, flat: list[Any]) -> None:
        """Bind ``flat`` (the rows' values one after the other) into a staging table."""
        if not flat:
            return
        width = len(_STAGE[table])
        one = "(" + ", ".join("?" * width) + ")"
        step = width * _ROWS_PER_STATEMENT
        full = len(flat) - len(flat) % step
        db = self.db
        if full:
            sql = f"INSERT INTO stage.{table} VALUES " + ", ".join([one] * _ROWS_PER_STATEMENT)
            db.executemany(sql, (flat[i : i + step] for i in range(0, full, step)))
        if full < len(flat):
            rest = (len(flat) - full) // width
            sql = f"INSERT INTO stage.{table} VALUES " + ", ".join([one] * rest)
            db.execute(sql, flat[full:])

    # ---- writing (under the write lock) -----------------------------------------------------

    def write(self) -> Written:
        """Take the write lock, drop duplicates of the store, insert the staged range.

        The transaction stays open: the coordinator records the batch as pending (state
        file, reports) and then calls :meth:`commit`.
        """
        batch = self._staged
        if batch is None:
            raise RuntimeError("write() without a prepared range")
        db, sql = self.db, self._sql
        db.execute("BEGIN IMMEDIATE")
        found: dict[tuple[str, str], int] = {}
        for e164, cid in db.execute(sql["probe_phone"]):
            found.setdefault(("phone", e164), cid)
        for email, cid in db.execute(sql["probe_email"]):
            found.setdefault(("email", email), cid)
        for typ, value, cid in db.execute(sql["probe_xid"]):
            found.setdefault((typ, value), cid)
        merges, dropped = batch.merges, batch.dropped
        if found:
            merges = []
            dropped = dedupe(batch.columns.keyed(), found, merges)
        rows = range(len(batch.columns))
        kept = len(rows) - len(dropped)
        if kept == 0:
            return Written(merges, len(dropped), [])
        if dropped:
            db.executemany("INSERT INTO stage.s_drop VALUES (?)", ((r,) for r in dropped))
        fids = [fid for (fid,) in db.execute(sql["field_ids"])]
        if fids:
            marks = ", ".join("?" * len(fids))
            have = db.execute(
                f"SELECT count(*) FROM main.crm_custom_field WHERE id IN ({marks})", fids
            ).fetchone()[0]
            if have != len(fids):
                raise RuntimeError("a custom field of this file was deleted during the import")
        (top,) = db.execute("SELECT max(id) FROM main.crm_customer").fetchone()
        offset = (top or 0) + 1
        ts = sqlite_datetime(dt.datetime.now(dt.UTC))
        for stmt in sql["inserts_kept" if dropped else "inserts"]:
            db.execute(stmt, {"off": offset, "ts": ts})
        first = next(r for r in rows if r not in dropped)
        last = next(r for r in reversed(rows) if r not in dropped)
        ids = [offset + first, offset + last]
        after = {
            "file": self.file_name,
            "lines": [batch.first_line, batch.end_line],
            "customers": kept,
        }
        db.execute(
            "INSERT INTO main.crm_audit (at, actor, entity, entity_id, action, before, after) "
            "VALUES (?, ?, 'customer', ?, 'import', 'null', ?)",
            (ts, self.actor, f"{ids[0]}-{ids[1]}", json.dumps(after)),
        )
        return Written(merges, len(dropped), ids)

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        self._staged = None

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self._staged = None

    def close(self) -> None:
        try:
            self.rollback()
        finally:
            self.db.close()
            self._csv.close()


#: staging table of each custom field type
_CUSTOM_STAGE = {"text": "s_text", "choice": "s_text", "number": "s_num", "date": "s_date",
                 "bool": "s_bool"}  # fmt: skip


def _where(has: list[Any], *cols: Iterable[Any]) -> Iterator[Any]:
    """The values of the rows where ``has`` is true, one row after the other (staging
    tables take their rows flattened). compress and zip loop in C."""
    return chain.from_iterable(zip(*(compress(c, has) for c in cols), strict=False))


def _sparse(rs: range, key: Any, values: list[Any], absent: Any) -> Iterator[Any]:
    """(row, key, value) flattened for the rows whose value is not ``absent`` ("" or None)."""
    if absent in values:
        has = list(map(is_not, values, repeat(None))) if absent is None else values
        return _where(has, rs, repeat(key), values)
    return chain.from_iterable(zip(rs, repeat(key), values, strict=False))


@dataclass(slots=True)
class _Batch:
    columns: Columns
    dropped: set[int]
    merges: list[list[Any]]
    first_line: int
    end_line: int


def _constant_defaults(model: Any, given: Sequence[str]) -> tuple[list[str], str]:
    """The model's columns the loader does not name, filled with their constant defaults.

    SQLAlchemy fills Python-side defaults on its inserts; raw SQL must do it itself. A
    column with a computed default we do not know how to fill is a programming error, caught
    here at start-up rather than as wrong rows.
    """
    cols: list[str] = []
    vals = ""
    for col in model.__table__.columns:
        d = col.default
        if col.name in given or d is None or col.primary_key:
            continue
        if not getattr(d, "is_scalar", False):
            raise RuntimeError(
                f"{model.__tablename__}.{col.name} has a computed default the bulk loader "
                "does not fill"
            )
        cols.append(col.name)
        vals += ", " + _sql_literal(d.arg)
    return cols, vals


def _sql_literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise RuntimeError(f"cannot write the default {v!r} as SQL")


def write_statements() -> dict[str, Any]:
    """The SQL of a write, built from the models (so a new column is not missed); in the
    importing process, so that the workers never import the ORM."""
    from crm_bridge.models import Customer, CustomFieldValue, Email, ExternalId, Phone

    kept = " WHERE r NOT IN (SELECT r FROM stage.s_drop)"
    given = {
        Customer: ["id", "kind", "name", *NAME_COLUMNS, "street", "postcode", "city",
                   "country", "segment", "vip", "language", "time_zone", "created_at",
                   "updated_at"],
        Phone: ["customer_id", "raw", "e164", "extension", "kind", "position"],
        Email: ["customer_id", "email", "position"],
        ExternalId: ["customer_id", "id_type", "value"],
    }  # fmt: skip
    sources = {
        Customer: ("s_customer c CROSS JOIN stage.s_profile p ON p.id = c.profile",
                   "r + :off, p.kind, name, " + "".join(f"{c}, " for c in NAME_COLUMNS)
                   + "street, postcode, city, p.country, p.segment, p.vip, p.language, "
                   "p.time_zone, :ts, :ts", ""),
        Phone: ("s_phone", "r + :off, raw, e164, extension, kind, position", " ORDER BY e164"),
        Email: ("s_email", "r + :off, email, position", " ORDER BY email"),
        ExternalId: ("s_xid", "r + :off, id_type, value", " ORDER BY value, id_type"),
    }  # fmt: skip
    inserts = []
    for model, cols in given.items():
        table, select, order = sources[model]
        extra_cols, extra_vals = _constant_defaults(model, cols)
        inserts.append(
            f"INSERT INTO main.{model.__tablename__} ({', '.join([*cols, *extra_cols])}) "
            f"SELECT {select}{extra_vals} FROM stage.{table}{{where}}{order}"
        )
    value_cols = ["customer_id", "field_id", "value_text", "value_number", "value_date",
                  "value_bool"]  # fmt: skip
    extra_cols, extra_vals = _constant_defaults(CustomFieldValue, value_cols)
    parts = [
        f"SELECT r + :off AS c, field_id AS f, {', '.join(vals)}{extra_vals} "
        f"FROM stage.{table}{{where}}"
        for table, vals in (
            ("s_text", ("v", "NULL", "NULL", "NULL")),
            ("s_num", ("NULL", "v", "NULL", "NULL")),
            ("s_date", ("NULL", "NULL", "v", "NULL")),
            ("s_bool", ("NULL", "NULL", "NULL", "v")),
        )
    ]
    # no ORDER BY: sorting ~4 values a row cost more than inserting them one field after the
    # other (each field's values arrive in customer order, so each pass goes through the
    # primary key's pages once)
    inserts.append(
        f"INSERT INTO main.{CustomFieldValue.__tablename__} "
        f"({', '.join([*value_cols, *extra_cols])}) " + " UNION ALL ".join(parts)
    )
    # the staged rows drive the joins (CROSS JOIN fixes the order): one index probe each
    return {
        "inserts": [s.replace("{where}", "") for s in inserts],
        "inserts_kept": [s.replace("{where}", kept) for s in inserts],
        "probe_phone": "SELECT s.e164, p.customer_id FROM stage.s_phone s "
        "CROSS JOIN main.crm_phone p ON p.e164 = s.e164",
        "probe_email": "SELECT s.email, e.customer_id FROM stage.s_email s "
        "CROSS JOIN main.crm_email e ON e.email = s.email",
        "probe_xid": "SELECT s.id_type, s.value, x.customer_id FROM stage.s_xid s "
        "CROSS JOIN main.crm_external_id x ON x.id_type = s.id_type AND x.value = s.value",
        "field_ids": "SELECT DISTINCT field_id FROM (SELECT field_id FROM stage.s_text "
        "UNION ALL SELECT field_id FROM stage.s_num UNION ALL SELECT field_id FROM "
        "stage.s_date UNION ALL SELECT field_id FROM stage.s_bool)",
    }


# ---------------------------------------------------------------------------------------------
# workers


class LoaderError(Exception):
    """An operation failed in a worker process; the message is the worker's."""


#: what a worker process runs (its one argument: the file descriptor of its socket)
_WORKER_MAIN = "import sys; from crm_bridge.bulkload import serve; serve(int(sys.argv[1]))"


def _worker_env() -> dict[str, str]:
    """This process's environment, with the directory this package was imported from first
    on the path: the worker must import the same code even when it is run from a source
    tree that is not installed."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return env


def serve(fd: int) -> None:
    """A worker process's main: see :func:`_serve`.

    The cyclic garbage collector is off while a range is parsed: a range builds ~200,000
    small containers that all live until its write, and the collector's passes over them
    cost a fifth of the parsing time. Nothing here makes reference cycles that matter; a
    full collection runs after each commit, when little is alive.
    """
    gc.disable()
    pipe = Connection(fd)
    try:
        _serve(pipe)
    finally:
        pipe.close()


def _serve(pipe: Connection) -> None:
    """One SqliteLoader, driven by (operation, arguments) messages; the
    first message ("init", args) builds it (the process starts before the import knows its
    custom field ids, so its start-up overlaps the import's own)."""
    loader: SqliteLoader | None = None
    failed = "the worker was not initialised"
    try:
        while True:
            try:
                op, op_args = pipe.recv()
            except (EOFError, OSError, KeyboardInterrupt):
                return
            if op == "stop":
                return
            if op == "init":
                try:
                    loader = SqliteLoader(*op_args)
                    pipe.send(("ok", None))
                except Exception as e:
                    failed = f"{type(e).__name__}: {e}"
                    pipe.send(("error", failed))
                continue
            if loader is None:
                pipe.send(("error", failed))
                continue
            try:
                pipe.send(("ok", getattr(loader, op)(*op_args)))
            except Exception as e:
                pipe.send(("error", str(e) or type(e).__name__))
            if op in ("commit", "rollback"):
                gc.collect()
    finally:
        if loader is not None:
            loader.close()


class LoaderPool:
    """``processes`` workers, each a spawned process with its own loader; 0 = one loader in
    this process (small files: no process start-up, same code)."""

    def __init__(self, processes: int) -> None:
        self._local: SqliteLoader | None = None
        self._pipes: list[Connection] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._checkpointer: Checkpointer | None = None
        self.size = max(processes, 1)
        self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="import-loader")
        if processes <= 0:
            return
        # plain child processes running serve(), not multiprocessing's spawn or forkserver:
        # those re-import the parent's __main__ in the child (for `cti crm import` that is the
        # whole CLI with the web server, ~1 s apiece); never a fork of this process, which
        # runs threads (the database driver's)
        for _ in range(processes):
            mine, theirs = socket.socketpair()
            with theirs:
                proc = subprocess.Popen(
                    [sys.executable, "-c", _WORKER_MAIN, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    env=_worker_env(),
                )
            self._pipes.append(Connection(mine.detach()))
            self._procs.append(proc)

    async def start(self, args: tuple[Any, ...]) -> None:
        """Build the loaders (SqliteLoader's arguments)."""
        self._checkpointer = Checkpointer(args[0])
        if not self._pipes:
            loop = asyncio.get_running_loop()
            self._local = await loop.run_in_executor(self._threads, SqliteLoader, *args)
            return
        await asyncio.gather(*(self._call(w, "init", *args) for w in range(self.size)))

    async def _call(self, worker: int, op: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if not self._pipes:
            if self._local is None:
                raise LoaderError("the loader was not started")
            return await loop.run_in_executor(self._threads, getattr(self._local, op), *args)
        pipe = self._pipes[worker]

        def rpc() -> Any:
            pipe.send((op, args))
            try:
                status, value = pipe.recv()
            except EOFError:
                raise LoaderError("the import worker process died") from None
            if status != "ok":
                raise LoaderError(value)
            return value

        return await loop.run_in_executor(self._threads, rpc)

    async def prepare(self, worker: int, rng: Range) -> Staged:
        staged: Staged = await self._call(worker, "prepare", rng)
        return staged

    async def write(self, worker: int) -> Written:
        written: Written = await self._call(worker, "write")
        return written

    async def commit(self, worker: int) -> None:
        await self._call(worker, "commit")
        if self._checkpointer is not None:
            self._checkpointer.poke()

    async def rollback(self, worker: int) -> None:
        await self._call(worker, "rollback")

    async def close(self) -> None:
        """Stop the workers; an open transaction of theirs is rolled back, never committed."""
        loop = asyncio.get_running_loop()
        if self._local is not None:
            local = self._local
            # after any operation still running in the thread
            await loop.run_in_executor(self._threads, local.close)
        elif self._pipes:
            for proc in self._procs:
                proc.terminate()
            for proc in self._procs:
                try:
                    await loop.run_in_executor(None, proc.wait, 5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    await loop.run_in_executor(None, proc.wait)
            for pipe in self._pipes:
                pipe.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._checkpointer is not None:
            await loop.run_in_executor(None, self._checkpointer.close)


class Checkpointer:
    """Copies the committed pages from the WAL into the database file on a thread of its
    own, while the next range is being written.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses ``wal_autocheckpoint``:
    in the bulk loader, the write turn the other worker waits for. There it copied up to
    40 MB and synced two files, a tenth of the import's time. A PASSIVE checkpoint from
    another connection copies the same pages without blocking anybody (measured: 8-10 %
    faster imports). It never waits for the writer, so while writes follow each other it
    cannot finish and the WAL cannot start over; the workers' own automatic checkpoint
    (:data:`WAL_CHECKPOINT_PAGES`), which runs while no other writer does, stays the bound
    on the WAL's size, and finds most pages already copied. (It is skipped while this one
    runs and tried again at the next commit: a 1,000,000-row import peaked at 260 MiB.)
    """

    def __init__(self, db_path: str) -> None:
        self._path = db_path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="import-checkpoint")
        self._running: Future[None] | None = None

    def poke(self) -> None:
        """Start a checkpoint unless one is running."""
        if self._running is None or self._running.done():
            self._running = self._thread.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._db is None:
                self._db = sqlite3.connect(self._path, isolation_level=None,
                                           check_same_thread=False)  # fmt: skip
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # best effort: the workers' own checkpoints still bound the WAL

    def close(self) -> None:
        """After the checkpoint that is running, if any."""
        self._thread.shutdown(wait=True)
        if self._db is not None:
            self._db.close()


# ---------------------------------------------------------------------------------------------
# the store around an import


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The database file behind ``engine`` when it is one SQLite file a second connection can
    open (not an in-memory database), else None."""
    from sqlalchemy.engine import make_url

    url = make_url(str(engine.url))
    if url.get_backend_name() != "sqlite":
        return None
    db = url.database or ""
    if db in ("", ":memory:") or db.startswith("file:") or "mode=memory" in str(url):
        return None
    return db


def deferrable_indexes() -> list[Index]:
    """Indexes a bulk load may drop and rebuild: the customer table's search indexes (name,
    "last name first", postcode). The duplicate check needs the others."""
    from crm_bridge.models import Customer

    table: Any = Customer.__table__
    return sorted(table.indexes, key=lambda ix: str(ix.name))


async def restore_indexes(engine: AsyncEngine) -> list[str]:
    """Create the deferrable indexes that are missing (after an import that stopped early);
    returns their names."""
    from crm_bridge.models import Customer

    def create(sync_conn: Any) -> list[str]:
        from sqlalchemy import inspect

        have = {i["name"] for i in inspect(sync_conn).get_indexes(Customer.__tablename__)}
        missing = [ix for ix in deferrable_indexes() if ix.name not in have]
        sqlite = bool(missing) and sync_conn.dialect.name == "sqlite"
        if sqlite:
            # each build sorts the whole table. Measured on 200,000 customers: the sorter
            # took about twice as long with its runs in memory (the engine's temp_store) as
            # in temporary files, which the OS cache holds anyway; a second sorter thread
            # helps a little
            sync_conn.exec_driver_sql("PRAGMA temp_store=FILE")
            sync_conn.exec_driver_sql("PRAGMA threads=2")
        try:
            for ix in missing:
                ix.create(sync_conn)
        finally:
            if sqlite:
                sync_conn.exec_driver_sql("PRAGMA temp_store=MEMORY")
                sync_conn.exec_driver_sql("PRAGMA threads=0")
        return [str(ix.name) for ix in missing]

    async with engine.begin() as conn:
        return await conn.run_sync(create)
