"""Database plumbing shared by every package: the declarative base, engines, migrations.

Why one ``Base``: the CRM tables, the dialer's campaigns/leads and the CTI accounts live in
the same database and reference each other (a lead links to a customer, an interaction to an
agent), so they share one ``MetaData`` with one constraint naming convention. Each package
still owns its tables and its migrations.

Engines (:func:`make_engine`):

* ``sqlite+aiosqlite:///path/cti.db`` (plain ``sqlite:///`` is upgraded to aiosqlite): WAL
  journal (readers never wait for the writer), ``foreign_keys=ON`` (SQLite ignores FKs
  otherwise), ``busy_timeout`` so concurrent writers queue instead of failing, and
  ``synchronous=NORMAL`` (safe with WAL). The parent directory is created.
* ``postgresql+asyncpg://...`` (plain ``postgresql://`` is upgraded to asyncpg).

Migrations (:func:`migrate`) run Alembic programmatically, ``upgrade heads``, on the given URL.
The CRM bridge owns the base revision ``crm_0001`` (branch label ``crm``) in
``crm_bridge/migrations/versions``. Another package adds its own branch in its OWN directory,
e.g. ``dialer/migrations/``, with a first revision like::

    revision = "dialer_0001"
    down_revision = None            # a new branch, not stacked on the CRM's history
    branch_labels = ("dialer",)
    depends_on = "crm_0001"         # our tables exist before yours (FKs to crm_customer)

and its later revisions chain on ``down_revision = "dialer_0001"`` as usual. Its models
subclass :class:`Base` from this module. At start-up the daemon calls::

    await migrate(url, extra_version_locations=[str(Path(dialer.__file__).parent / "migrations")])

(the directory holding the revision files). ``upgrade heads`` then brings every branch to
its head; Alembic keeps one row per branch head in ``alembic_version``. To write a new
revision file for your branch by hand, use ``alembic.command.revision`` with
``head="dialer@head"`` on the config from :func:`alembic_config`, or copy an existing one.
Revision ids must be unique across all packages: prefix them with the package name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:  # Alembic is imported where migrations run: every process imports this
    # module (the import's worker processes too) and Alembic alone takes ~0.2 s
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_DIR",
    "Base",
    "UTCDateTime",
    "alembic_config",
    "make_engine",
    "make_sessionmaker",
    "migrate",
    "normalize_url",
    "utcnow",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table of the project (all packages)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always returned timezone-aware.

    SQLite has no time zone type; without this a round trip silently drops the offset and
    comparisons between aware and naive datetimes fail at run time.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware time")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def normalize_url(url: str) -> str:
    """Pick the async driver for plain URLs: sqlite -> aiosqlite, postgresql -> asyncpg."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, *, memory: bool, busy_ms: int) -> None:
    cur = dbapi_conn.cursor()
    try:
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
        cur.execute("PRAGMA temp_store=MEMORY")
    finally:
        cur.close()


def make_engine(url: str, *, busy_timeout_ms: int = 10_000, echo: bool = False) -> AsyncEngine:
    """Async engine for ``url`` with the connection settings every package relies on."""
    url = normalize_url(url)
    u = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if u.get_backend_name() == "sqlite":
        db = u.database or ""
        memory = db in ("", ":memory:") or "mode=memory" in url
        if not memory:
            Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)

        def on_connect(dbapi_conn: Any, record: Any) -> None:
            _sqlite_pragmas(dbapi_conn, record, memory=memory, busy_ms=busy_timeout_ms)

        event.listen(engine.sync_engine, "connect", on_connect)
        return engine
    kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
    return create_async_engine(url, **kwargs)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str, extra_version_locations: Sequence[str] = ()) -> Config:
    """An Alembic config built in code (no alembic.ini needed) covering every branch."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    locations = [str(MIGRATIONS_DIR / "versions"), *(str(p) for p in extra_version_locations)]
    # os.pathsep separator: paths may contain spaces
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", _join_paths(locations))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def _join_paths(paths: Sequence[str]) -> str:
    import os

    return os.pathsep.join(paths)


def _upgrade(conn: Connection, cfg: Config, target: str) -> None:
    from alembic import command

    cfg.attributes["connection"] = conn
    if target == "base" or target.startswith("-"):
        command.downgrade(cfg, target)
    else:
        command.upgrade(cfg, target)


async def migrate(
    url: str, extra_version_locations: Sequence[str] = (), *, target: str = "heads"
) -> None:
    """Bring the database at ``url`` to the newest schema of every branch (from empty too).

    ``target`` may name another revision; "base" (or "-1" etc.) downgrades instead.
    """
    cfg = alembic_config(url, extra_version_locations)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, cfg, target)
        if target == "heads":
            # a bulk import that was killed leaves the customer search indexes dropped
            from crm_bridge.bulkload import restore_indexes

            await restore_indexes(engine)
    finally:
        await engine.dispose()


def migrate_sync(url: str, extra_version_locations: Sequence[str] = ()) -> None:
    """For command-line tools that are not already inside an event loop."""
    asyncio.run(migrate(url, extra_version_locations))
