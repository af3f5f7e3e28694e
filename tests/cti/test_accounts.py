"""The account store on a real SQLite file (and PostgreSQL when CTI_TEST_PG_URL is set), with
the schema made by the alembic migrations. Marked slow: argon2 hashing is costly by design."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from crm_bridge.db import make_engine
from cti.accounts import AccountError, AccountStore, accounts_table
from cti.auth import verify_password
from cti.migrations import migrate

pytestmark = pytest.mark.slow


def _urls() -> list[object]:
    urls: list[object] = ["sqlite"]
    pg = os.environ.get("CTI_TEST_PG_URL")
    urls.append(
        pytest.param(pg, marks=pytest.mark.postgres)
        if pg
        else pytest.param("pg", marks=pytest.mark.skip(reason="CTI_TEST_PG_URL not set"))
    )
    return urls


@asynccontextmanager
async def _scratch_pg(url: str) -> AsyncIterator[str]:
    """A database of its own on the test cluster, dropped afterwards, so that nothing else
    running against the cluster sees or disturbs these rows."""
    name = f"cti_accounts_{secrets.token_hex(4)}"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture(params=_urls())
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AccountStore]:
    async with AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"
        else:
            url = await stack.enter_async_context(_scratch_pg(request.param))
        await migrate(url)
        await migrate(url)  # a second run is a no-op
        engine = make_engine(url)
        yield AccountStore(engine)
        await engine.dispose()


async def test_create_and_authenticate(store: AccountStore) -> None:
    p = await store.create("Alice", "s3cret-pass", display_name="Alice A.")
    assert p.username == "alice" and p.role == "agent" and p.agent_id
    assert await store.authenticate("alice", "s3cret-pass") == p
    assert await store.authenticate("ALICE ", "s3cret-pass") == p
    assert await store.authenticate("alice", "s3cret-pasS") is None
    assert await store.authenticate("nobody", "s3cret-pass") is None
    assert await store.authenticate("", "") is None
    view = await store.get(p.agent_id)
    assert view is not None and view.display_name == "Alice A." and not view.disabled
    assert "hash" not in str(view.to_dict())


async def test_password_is_stored_hashed(store: AccountStore) -> None:
    p = await store.create("bob", "hunter2hunter2")
    async with store._engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(accounts_table.c.password_hash).where(
                    accounts_table.c.agent_id == p.agent_id
                )
            )
        ).one()
    assert "hunter2" not in row.password_hash
    assert row.password_hash.startswith("$argon2id$")
    assert verify_password(row.password_hash, "hunter2hunter2")


@pytest.mark.parametrize(
    ("username", "password", "role", "code"),
    [
        ("carol", "short", "agent", "weak_password"),
        ("carol", "        ", "agent", "weak_password"),
        ("carol", "long-enough", "boss", "bad_role"),
        ("", "long-enough", "agent", "bad_username"),
        ("bad name", "long-enough", "agent", "bad_username"),
        ("x\r\ny", "long-enough", "agent", "bad_username"),
    ],
)
async def test_create_refuses_bad_input(
    store: AccountStore, username: str, password: str, role: str, code: str
) -> None:
    with pytest.raises(AccountError) as e:
        await store.create(username, password, role=role)
    assert e.value.code == code
    assert await store.list() == []


async def test_duplicate_username(store: AccountStore) -> None:
    await store.create("dave", "password-1")
    with pytest.raises(AccountError) as e:
        await store.create("Dave", "password-2")
    assert e.value.code == "duplicate_username"
    assert "dave" in str(e.value)
    assert await store.authenticate("dave", "password-1") is not None


async def test_roles_list_passwd_disable(store: AccountStore) -> None:
    admin = await store.create("root", "admin-pass", role="admin")
    sup = await store.create("sue", "super-pass", role="supervisor")
    agent = await store.create("al", "agent-pass")
    views = await store.list()
    assert [(v.username, v.role) for v in views] == [
        ("al", "agent"),
        ("root", "admin"),
        ("sue", "supervisor"),
    ]
    assert all(v.created_at <= time.time() for v in views)
    await store.set_password(agent.agent_id, "new-agent-pass")
    assert await store.authenticate("al", "agent-pass") is None
    assert await store.authenticate("al", "new-agent-pass") == agent
    with pytest.raises(AccountError):
        await store.set_password(agent.agent_id, "short")
    await store.disable(sup.agent_id)
    assert await store.authenticate("sue", "super-pass") is None
    v = await store.by_username("sue")
    assert v is not None and v.disabled
    await store.disable(sup.agent_id, False)
    assert await store.authenticate("sue", "super-pass") == sup
    with pytest.raises(AccountError) as e:
        await store.disable("no-such-id")
    assert e.value.code == "not_found"
    assert (await store.get(admin.agent_id)) is not None
    assert await store.get("no-such-id") is None
