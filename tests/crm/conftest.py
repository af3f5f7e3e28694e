"""Database fixtures for the CRM bridge tests: every test using ``db_url`` runs once against a
real SQLite file and once against PostgreSQL when ``CTI_TEST_PG_URL`` is set.

* SQLite: the schema is migrated once per session into a template file, copied per test.
* PostgreSQL: a database with a random name is created and migrated once per session,
  emptied (TRUNCATE) before each test and dropped at the end.

Fixtures for other test modules: ``db_url`` (migrated, empty), ``engine``, ``crm_settings``,
``crm`` (a BuiltinCrm), ``fake`` (the fake external CRM), ``pg_admin_url``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.db import make_engine, migrate, normalize_url
from crm_bridge.settings import CrmSettings
from crm_bridge.store import BuiltinCrm
from tests.crm.fake_crm import FakeCrm

PG_ENV = "CTI_TEST_PG_URL"
_T = TypeVar("_T")


def run_in_thread(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion on a fresh loop in another thread: session fixtures
    may be set up from inside a running test loop, where asyncio.run is not allowed."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV, "").strip()
    return normalize_url(url) if url else None


async def _pg_admin(sql: str) -> None:
    import asyncpg

    admin = make_url(pg_admin_url() or "")
    conn = await asyncpg.connect(
        host=admin.host,
        port=admin.port or 5432,
        user=admin.username,
        password=admin.password,
        database=admin.database or "postgres",
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def empty_database(kind: str, sqlite_file: Path, prefix: str) -> AsyncIterator[str]:
    """The URL of a database with nothing in it, for migration tests: a new SQLite file, or
    (kind "postgresql") a throw-away PostgreSQL database named `prefix` + random, dropped
    afterwards; skips when CTI_TEST_PG_URL is not set."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{sqlite_file}"
        return
    if not pg_admin_url():
        pytest.skip(f"{PG_ENV} not set")
    name = f"{prefix}{secrets.token_hex(5)}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(pg_admin_url() or "").set(database=name).render_as_string(hide_password=False)
        )
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schema_diff(conn: Connection, metadata: MetaData, table_prefix: str) -> list[Any]:
    """What differs between the migrated database and the models, for the tables whose name
    starts with `table_prefix` (one package's tables; the others have their own test)."""

    def only_ours(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        if type_ == "table":
            return bool(name and name.startswith(table_prefix))
        table = getattr(obj, "table", None)
        return table is None or table.name.startswith(table_prefix)

    ctx = MigrationContext.configure(conn, opts={"include_object": only_ours, "compare_type": True})
    return list(compare_metadata(ctx, metadata))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crm-template") / "template.db"
    run_in_thread(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    if not pg_admin_url():
        pytest.skip(f"{PG_ENV} not set")
    name = f"cti_test_{secrets.token_hex(6)}"
    run_in_thread(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_admin_url() or "").set(database=name).render_as_string(hide_password=False)
    try:
        run_in_thread(migrate(url))
        yield url
    finally:
        run_in_thread(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _truncate_pg(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            names = (
                (
                    await conn.exec_driver_sql(
                        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                        "AND tablename <> 'alembic_version'"
                    )
                )
                .scalars()
                .all()
            )
            if names:
                joined = ", ".join(f'"{n}"' for n in names)
                await conn.exec_driver_sql(f"TRUNCATE {joined} RESTART IDENTITY CASCADE")
    finally:
        await engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "crm.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
    else:
        url: str = request.getfixturevalue("pg_database")
        await _truncate_pg(url)
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def crm_settings() -> CrmSettings:
    return CrmSettings(default_region="DE", default_area="30", lookup_timeout=2.0)


@pytest.fixture
async def crm(engine: AsyncEngine, crm_settings: CrmSettings) -> AsyncIterator[BuiltinCrm]:
    store = BuiltinCrm(engine, crm_settings)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def pg_url_or_skip() -> str:
    url = pg_admin_url()
    if not url:
        pytest.skip(f"{PG_ENV} not set")
    return url


@pytest.fixture
async def fake() -> AsyncIterator[FakeCrm]:
    """The fake external CRM, served over HTTP on 127.0.0.1."""
    f = FakeCrm()
    await f.start()
    try:
        yield f
    finally:
        await f.stop()
