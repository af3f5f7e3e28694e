"""The SQLite bulk loader behind `cti crm import`: ranges cut where records end, worker
processes writing in file order, search indexes rebuilt after a bulk load (and after one
that died). Real SQLite files; the PostgreSQL import is covered by test_import.py."""

from __future__ import annotations

import csv
import io
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.adapter import Identity
from crm_bridge.bulkload import (
    Checkpointer,
    deferrable_indexes,
    ramped,
    read_records,
    records,
    split_ranges,
)
from crm_bridge.csvio import CsvSource
from crm_bridge.db import migrate
from crm_bridge.importer import ImportOptions, SimulatedCrash, default_paths, import_csv
from crm_bridge.models import Customer, CustomFieldValue, Phone
from crm_bridge.settings import CrmSettings
from crm_bridge.store import BuiltinCrm


@pytest.fixture(autouse=True)
def _template_outside_the_loop(sqlite_template: Path) -> None:
    """conftest's sqlite_template calls asyncio.run; build it before any async fixture runs."""


def _records(data: bytes, start: int = 0, line: int = 0) -> list[tuple[int, list[str], str]]:
    """The records as the streaming reader sees them, and checks that the range reader of
    the workers sees the same."""
    src = CsvSource(io.BytesIO(data[start:]), start_offset=start, start_line=line)
    got = [(r.line, r.end_line, r.fields, r.error) for r in src]
    assert list(records(data[start:], line)) == got
    # and the lists the loader takes (one csv call when every record is one line)
    lists = read_records(data[start:], line)
    readable = [(a, b, f) for a, b, f, e in got if not e]
    assert list(zip(lists.lines, lists.end_lines, lists.rows, strict=True)) == readable
    assert lists.unreadable == [(a, b, e) for a, b, _, e in got if e]
    bad = any(c in data[start:] for c in b"\x00\x01\x1f") or b"\xff" in data[start:]
    assert lists.clean == (not bad)
    return [(a, f, e) for a, _, f, e in got]


_cell = st.text(alphabet=st.sampled_from(list('ab ,"\n;é\x00')), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(_cell, min_size=1, max_size=4), max_size=25),
    blank=st.lists(st.integers(0, 30), max_size=3),
    lines=st.integers(1, 7),
    newline_at_end=st.booleans(),
    crlf=st.booleans(),
    ramp=st.booleans(),
)
def test_ranges_cut_only_where_a_record_ends(
    rows: list[list[str]],
    blank: list[int],
    lines: int,
    newline_at_end: bool,
    crlf: bool,
    ramp: bool,
) -> None:
    """Whatever the quoting (commas, quotes and line breaks inside fields), the records of
    the ranges parsed one by one are the records of the whole file, with the same lines."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    for r in rows:
        w.writerow(r)
    text = buf.getvalue()
    parts = text.split("\n")
    for b in blank:  # blank lines between records
        pos = min(b, len(parts))
        if pos == 0 or text.count('"', 0, len("\n".join(parts[:pos]))) % 2 == 0:
            parts.insert(pos, "")
    text = "\n".join(parts)
    if not newline_at_end:
        text = text.rstrip("\n")
    data = text.encode()
    whole = _records(data)
    got: list[tuple[int, list[str], str]] = []
    plan = ramped(lines, len(data)) if ramp else lines  # shorter first and last ranges
    ranges = list(split_ranges(io.BytesIO(data), 0, 0, plan))
    pos, line = 0, 0
    for rng in ranges:
        assert (rng.start, rng.line) == (pos, line)  # contiguous, nothing skipped
        assert rng.end > rng.start
        got += _records(data[: rng.end], rng.start, rng.line)
        pos, line = rng.end, rng.end_line
    assert pos == len(data)
    assert got == whole


def test_a_ramped_plan_starts_and_ends_short() -> None:
    sizes = [
        r.end_line - r.line
        for r in split_ranges(io.BytesIO(b"x,1\n" * 1000), 0, 0, ramped(100, 4000))
    ]
    assert sum(sizes) == 1000
    assert sizes[0] == 25 and set(sizes[1:10]) == {100} and set(sizes[10:]) == {25}


def _big_file(path: Path, n: int, first: int = 0) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "postcode", "phone", "email", "account", "cf_tier:choice=a|b"])
        for i in range(first, first + n):
            w.writerow([f"Person {i:05d} Müller", f"{10000 + i % 900}", f"+4930555{i:05d}",
                        f"p{i}@example.org", f"K-{i}", "ab"[i % 2]])  # fmt: skip
    return path


async def _index_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'crm_customer'"
        )
        return {r[0] for r in rows}


def _sqlite_only(engine: AsyncEngine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("the SQLite bulk loader")


async def test_bulk_load_rebuilds_the_search_indexes_and_finds_customers_by_name(
    engine: AsyncEngine, crm_settings: CrmSettings, crm: BuiltinCrm, tmp_path: Path
) -> None:
    _sqlite_only(engine)
    src = _big_file(tmp_path / "c.csv", 300)
    opts = ImportOptions(batch_size=70, defer_indexes=True, progress=False)
    res = await import_csv(engine, src, crm_settings, opts)
    assert res.complete and (res.imported, res.batches) == (300, 5)
    wanted = {str(ix.name) for ix in deferrable_indexes()}
    assert wanted <= await _index_names(engine)
    hits = await crm.search("person 00123")
    assert [c.name for c in hits] == ["Person 00123 Müller"]
    one = await crm.identify(Identity(number="+493055500299"))
    assert one.status == "one" and one.card is not None and one.card.name == "Person 00299 Müller"
    async with engine.connect() as conn:
        tiers = (await conn.execute(select(func.count()).select_from(CustomFieldValue))).scalar()
    assert tiers == 300


async def test_a_killed_bulk_load_leaves_indexes_that_resume_or_migrate_restore(
    engine: AsyncEngine, db_url: str, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    """A process that dies mid-import cannot rebuild what it dropped: the next daemon start
    (migrate) or the resumed import does, and the rows are all there exactly once."""
    _sqlite_only(engine)
    src = _big_file(tmp_path / "c.csv", 200)
    wanted = {str(ix.name) for ix in deferrable_indexes()}

    def crash(where: str, n: int) -> None:
        if where == "after_commit" and n == 2:
            raise SimulatedCrash(where)

    opts = ImportOptions(batch_size=50, defer_indexes=True, crash_hook=crash, progress=False)
    with pytest.raises(SimulatedCrash):
        await import_csv(engine, src, crm_settings, opts)
    assert not wanted & await _index_names(engine)
    await migrate(db_url)  # what the daemon runs at start-up
    assert wanted <= await _index_names(engine)
    opts = ImportOptions(batch_size=50, defer_indexes=True, resume=True, progress=False)
    res = await import_csv(engine, src, crm_settings, opts)
    assert res.complete and res.imported == 200
    assert wanted <= await _index_names(engine)
    async with engine.connect() as conn:
        n = (await conn.execute(select(func.count(func.distinct(Customer.name))))).scalar()
        phones = (await conn.execute(select(func.count()).select_from(Phone))).scalar()
    assert (n, phones) == (200, 200)


@pytest.mark.slow
async def test_worker_processes_write_in_file_order_and_keep_duplicates_out(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    """Two workers parse side by side but commit range after range: customer ids follow
    the file, and a row repeating an earlier range's number becomes a merge suggestion
    even when the two ranges were parsed at the same time by different workers."""
    _sqlite_only(engine)
    src = _big_file(tmp_path / "c.csv", 400)
    with src.open("a", encoding="utf-8") as f:
        f.write("Late Twin,10001,+493055500007,,,a\n")  # the number of row 8
    opts = ImportOptions(batch_size=60, parse_process=True, progress=False)
    res = await import_csv(engine, src, crm_settings, opts)
    assert res.complete and (res.imported, res.duplicates) == (400, 1)
    async with engine.connect() as conn:
        names = list((await conn.execute(select(Customer.name).order_by(Customer.id))).scalars())
    assert names == [f"Person {i:05d} Müller" for i in range(400)]
    merges = list(csv.DictReader(default_paths(src)[1].open(encoding="utf-8")))
    assert [(m["line"], m["match"], m["source"]) for m in merges] == [("402", "phone", "database")]


@pytest.mark.slow
async def test_worker_process_reports_a_refused_batch_and_resume_finishes(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    _sqlite_only(engine)
    src = _big_file(tmp_path / "c.csv", 120)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE TRIGGER boom BEFORE INSERT ON crm_customer WHEN NEW.name = "
            "'Person 00075 Müller' BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
        )
    opts = ImportOptions(batch_size=30, parse_process=True, progress=False)
    res = await import_csv(engine, src, crm_settings, opts)
    assert not res.complete and "lines 62-91" in res.failed and "boom refused" in res.failed
    assert res.imported == 60
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP TRIGGER boom")
    opts = ImportOptions(batch_size=30, parse_process=True, resume=True, progress=False)
    res = await import_csv(engine, src, crm_settings, opts)
    assert res.complete and res.imported == 120 and res.resumed_at_line == 61


def test_the_name_columns_the_loaders_fill_are_the_models_computed_ones() -> None:
    """The bulk writers fill the name's search keys themselves (SQLAlchemy's computed
    defaults do not run on raw SQL): they must name every such column of the model."""
    from crm_bridge.batchrules import NAME_COLUMNS

    computed = {
        c.name
        for c in Customer.__table__.columns
        if c.default is not None and getattr(c.default, "is_callable", False)
    }
    assert computed - {"created_at", "updated_at"} == set(NAME_COLUMNS)


def test_the_workers_import_no_orm() -> None:
    """The worker processes start from this module alone; without SQLAlchemy they are
    ready in a fraction of the time (their start-up is part of every import's time)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import sys, crm_bridge.bulkload; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "data",
    [
        b'a,b\n"x\ny",z\n\n  \nlast,1',  # a quoted line break: one record over two lines
        b'a,b\n"p\rq",r\nc,d\r\ne,f',  # a bare carriage return inside a field
        b'a,"b\n',  # a quote that is never closed
        b"\n\n",
        b"",
    ],
)
def test_the_range_lists_equal_the_record_reader_on_awkward_line_breaks(data: bytes) -> None:
    want = list(records(data, 7))
    got = read_records(data, 7)
    assert list(zip(got.lines, got.end_lines, got.rows, strict=True)) == [
        (a, b, f) for a, b, f, e in want if not e
    ]
    assert got.unreadable == [(a, b, e) for a, b, _, e in want if e]


def test_the_checkpointer_copies_committed_pages_into_the_database_file(tmp_path: Path) -> None:
    """The bulk loader's commits leave their pages in the WAL (the loaders checkpoint
    rarely); the pool's Checkpointer copies them into the database file on its own thread."""
    path = str(tmp_path / "c.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (v)")
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) "
        "INSERT INTO t SELECT randomblob(1000) FROM n"
    )
    assert os.path.getsize(path) < 100_000  # the rows are only in the WAL so far
    ck = Checkpointer(path)
    ck.poke()
    ck.poke()  # one is running: not a second one
    ck.close()  # waits for it
    assert os.path.getsize(path) > 4_000_000
    busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and copied == frames  # nothing was left to copy
    db.close()
    Checkpointer(str(tmp_path / "missing" / "x.db")).close()  # never started: nothing to do
    bad = Checkpointer(str(tmp_path / "missing" / "x.db"))
    bad.poke()  # cannot open the file: the import goes on, its loaders still checkpoint
    bad.close()
