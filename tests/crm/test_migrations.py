"""Migrations from an empty database on SQLite and PostgreSQL, the models matching the
migrated schema, and other packages' branches stacking on the CRM's base revision."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

import crm_bridge.models  # noqa: F401  (registers the tables)
from crm_bridge.db import Base, make_engine, migrate
from tests.crm.conftest import empty_database, schema_diff


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with empty_database(request.param, tmp_path / "sub dir" / "empty.db", "cti_mig_") as url:
        yield url


def _diff(conn: Connection) -> list[Any]:
    return schema_diff(conn, Base.metadata, "crm_")


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_from_empty_and_models_match(empty_url: str) -> None:
    await migrate(empty_url)
    engine = make_engine(empty_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            assert {t.name for t in Base.metadata.sorted_tables if t.name.startswith("crm_")} <= (
                tables
            )
            heads = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            assert [h[0] for h in heads] == ["crm_0002"]
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
    # running it again is a no-op
    await migrate(empty_url)


async def test_custom_values_survive_the_rebuild_without_rowid(empty_url: str) -> None:
    """crm_0002 rebuilds crm_custom_value clustered on its key (SQLite): values written
    under crm_0001 are still there afterwards, and again after a downgrade."""

    async def values() -> list[tuple[Any, ...]]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT customer_id, field_id, value_text FROM crm_custom_value")
            )
            return [tuple(r) for r in rows]

    async def rowid_table() -> bool:
        async with engine.connect() as conn:
            sql = (
                await conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'crm_custom_value'")
                )
            ).scalar()
        return "WITHOUT ROWID" not in str(sql)

    await migrate(empty_url, target="crm_0001")
    engine = make_engine(empty_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO crm_customer (id, kind, name, name_key, name_rkey, street, "
                    "postcode, city, country, segment, vip, language, time_zone, created_at, "
                    "updated_at) VALUES (7, 'person', 'A', 'a', 'a', '', '', '', '', '', "
                    "false, '', '', '2026-01-01', '2026-01-01')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO crm_custom_field (id, name, label, type, choices, required, "
                    "position, created_at) VALUES (3, 'tier', 'Tier', 'text', '[]', false, 0, "
                    "'2026-01-01')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO crm_custom_value (customer_id, field_id, value_text) "
                    "VALUES (7, 3, 'gold')"
                )
            )
        sqlite = engine.dialect.name == "sqlite"
        assert not sqlite or await rowid_table()
        await migrate(empty_url)
        assert await values() == [(7, 3, "gold")]
        assert not sqlite or not await rowid_table()
        await migrate(empty_url, target="-1")  # a downgrade, back to crm_0001
        assert await values() == [(7, 3, "gold")]
        assert not sqlite or await rowid_table()
    finally:
        await engine.dispose()


async def test_downgrade_and_upgrade_again(empty_url: str) -> None:
    await migrate(empty_url)
    await migrate(empty_url, target="base")
    engine = make_engine(empty_url)
    try:
        async with engine.connect() as conn:
            assert not {t for t in await conn.run_sync(_tables) if t.startswith("crm_")}
    finally:
        await engine.dispose()
    await migrate(empty_url)


async def test_another_package_adds_its_own_branch(empty_url: str, tmp_path: Path) -> None:
    versions = tmp_path / "ext_migrations"
    versions.mkdir()
    (versions / "ext_0001_things.py").write_text(
        textwrap.dedent(
            """
            import sqlalchemy as sa
            from alembic import op

            revision = "ext_0001"
            down_revision = None
            branch_labels = ("ext",)
            depends_on = "crm_0001"


            def upgrade():
                op.create_table(
                    "ext_thing",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column(
                        "customer_id",
                        sa.Integer,
                        sa.ForeignKey("crm_customer.id", ondelete="CASCADE"),
                    ),
                )


            def downgrade():
                op.drop_table("ext_thing")
            """
        )
    )
    await migrate(empty_url, [str(versions)])
    await migrate(empty_url, [str(versions)])  # idempotent
    engine = make_engine(empty_url)
    try:
        async with engine.connect() as conn:
            assert {"ext_thing", "crm_customer"} <= await conn.run_sync(_tables)
            heads = {
                h[0] for h in (await conn.execute(text("SELECT version_num FROM alembic_version")))
            }
            # Alembic records the branch heads; crm_0001 is implied by ext_0001's depends_on
            assert "ext_0001" in heads
    finally:
        await engine.dispose()


async def test_sqlite_connection_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pragmas.db'}"  # plain URL: the async driver is chosen
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10000
    finally:
        await engine.dispose()


async def test_foreign_keys_are_enforced(empty_url: str) -> None:
    await migrate(empty_url)
    engine = make_engine(empty_url)
    try:
        from sqlalchemy.exc import IntegrityError

        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO crm_phone (customer_id, raw, e164, extension, kind, position)"
                        " VALUES (424242, 'x', '+4930123456', '', 'other', 0)"
                    )
                )
    finally:
        await engine.dispose()
