"""Preloading the SQLite CRM file at daemon start (crm_bridge/preload.py): the whole file when
it fits, the lookup indexes when it does not, and lookups keep answering meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from crm_bridge.adapter import Identity, NewCustomer, NewPhone
from crm_bridge.db import migrate
from crm_bridge.preload import INDEX_SCANS, preload
from crm_bridge.store import BuiltinCrm


@pytest.fixture
async def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "crm.db"
    await migrate(f"sqlite+aiosqlite:///{path}")
    return path


def _size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


async def test_a_file_that_fits_is_read_whole(db_file: Path) -> None:
    done = preload(str(db_file), 1 << 30, threading.Event())
    assert done.mode == "file"
    assert done.bytes_read == _size(db_file) > 0


async def test_a_file_over_the_limit_gets_its_lookup_indexes_walked(db_file: Path) -> None:
    done = preload(str(db_file), 1, threading.Event())
    assert (done.mode, done.bytes_read) == ("indexes", 0)
    # the scans name indexes by hand: a migration that renames one must fail here, not
    # silently turn the preload into a no-op
    conn = sqlite3.connect(db_file)
    try:
        for sql in INDEX_SCANS:
            assert conn.execute(sql).fetchone() == (0,)
    finally:
        conn.close()


async def test_nothing_is_read_once_stopped_or_switched_off(db_file: Path) -> None:
    stop = threading.Event()
    stop.set()
    assert preload(str(db_file), 1 << 30, stop).bytes_read == 0
    assert preload(str(db_file), 0, threading.Event()).mode == "none"
    assert preload(str(db_file.with_name("missing.db")), 1 << 30, threading.Event()).mode == "none"


async def test_lookups_answer_while_the_store_warms_up(crm: BuiltinCrm) -> None:
    if crm.engine.dialect.name != "sqlite":
        pytest.skip("the preload is for SQLite files")
    await crm.create_customer(
        NewCustomer(name="Anna Müller", phones=[NewPhone("030 123456", "landline")]),
        actor="admin",
    )
    warming = asyncio.create_task(crm.warm_up())
    await asyncio.sleep(0)  # the warm-up has begun reading in its thread
    assert not warming.done()
    during = await crm.identify(Identity(number="030123456"))
    await warming
    after = await crm.identify(Identity(number="+4930123456"))
    for found in (during, after):
        assert found.status == "one" and found.card is not None
        assert found.card.name == "Anna Müller"
