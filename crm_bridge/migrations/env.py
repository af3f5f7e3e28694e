"""Alembic environment shared by every package's migration branch.

Normally run through :func:`crm_bridge.db.migrate`, which hands us an open connection in
``config.attributes["connection"]``. Run from the ``alembic`` command line (with a config
from :func:`crm_bridge.db.alembic_config`) it opens its own async engine.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import crm_bridge.models  # noqa: F401  (registers the CRM tables on Base.metadata)
from crm_bridge.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        render_as_batch=conn.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_own_engine() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(_run_own_engine())
    else:
        _run(connection)
