"""Accounts of the people who log in to the CTI (agents, supervisors, admins).

Only the argon2 hash of a password is stored. Hashing costs tens of milliseconds of CPU by
design, so it runs in a worker thread: a login must not stall pops for everybody else.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.auth import ROLES, Principal, hash_password, needs_rehash, verify_password

log = structlog.get_logger(__name__)

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")

metadata = sa.MetaData()

#: mirrors cti/migrations/versions/cti_0001_accounts.py (the migration creates it)
accounts_table = sa.Table(
    "cti_accounts",
    metadata,
    sa.Column("agent_id", sa.String(32), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("display_name", sa.String(128), nullable=False, server_default=""),
    sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
)


class AccountError(ValueError):
    """A request about an account was refused; `code` is machine-readable (the API maps it):
    bad_username, duplicate_username, weak_password, bad_role, not_found."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account as shown to admins: never the password hash."""

    agent_id: str
    username: str
    role: str
    display_name: str
    disabled: bool
    created_at: float

    def principal(self) -> Principal:
        return Principal(agent_id=self.agent_id, username=self.username, role=self.role)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "username": self.username,
            "role": self.role,
            "display_name": self.display_name,
            "disabled": self.disabled,
            "created_at": self.created_at,
        }


def normalize_username(username: str) -> str:
    name = username.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise AccountError(
            "bad_username",
            "username must be 1-64 characters: letters, digits, '.', '_', '@', '-' "
            "(starting with a letter or digit)",
        )
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            "weak_password", f"password must have at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError("weak_password", f"password longer than {MAX_PASSWORD_LENGTH}")
    if password.strip() == "":
        raise AccountError("weak_password", "password must not be blank")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError("bad_role", f"role must be one of {', '.join(ROLES)}, not {role!r}")


def _view(row: Any) -> AccountView:
    return AccountView(
        agent_id=row.agent_id,
        username=row.username,
        role=row.role,
        display_name=row.display_name,
        disabled=bool(row.disabled),
        created_at=float(row.created_at),
    )


_VIEW_COLUMNS = (
    accounts_table.c.agent_id,
    accounts_table.c.username,
    accounts_table.c.role,
    accounts_table.c.display_name,
    accounts_table.c.disabled,
    accounts_table.c.created_at,
)

#: verified against when the username is unknown, so that "no such user" and "wrong password"
#: take the same time (no username probing by timing)
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_hex(16))
    return _DUMMY_HASH


class AccountStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self, username: str, password: str, *, role: str = "agent", display_name: str = ""
    ) -> Principal:
        name = normalize_username(username)
        check_password(password)
        _check_role(role)
        display = display_name.strip()
        if len(display) > 128 or any(c in display for c in "\r\n\x00"):
            raise AccountError("bad_display_name", "display name: at most 128 characters, one line")
        hashed = await asyncio.to_thread(hash_password, password)
        agent_id = secrets.token_hex(8)
        now = time.time()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    accounts_table.insert().values(
                        agent_id=agent_id,
                        username=name,
                        password_hash=hashed,
                        role=role,
                        display_name=display,
                        disabled=False,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise AccountError("duplicate_username", f"username {name!r} is taken") from None
        log.info("account created", agent=agent_id, username=name, role=role)
        return Principal(agent_id=agent_id, username=name, role=role)

    async def authenticate(self, username: str, password: str) -> Principal | None:
        """The principal for a correct, enabled login; None for anything else (no reason
        given, so a caller cannot learn which usernames exist)."""
        try:
            name = normalize_username(username)
        except AccountError:
            name = ""
        row = None
        if name:
            async with self._engine.connect() as conn:
                result = await conn.execute(
                    sa.select(accounts_table).where(accounts_table.c.username == name)
                )
                row = result.first()
        if row is None:
            await asyncio.to_thread(verify_password, _dummy_hash(), password)
            return None
        ok = await asyncio.to_thread(verify_password, row.password_hash, password)
        if not ok or row.disabled:
            return None
        if needs_rehash(row.password_hash):
            await self._store_hash(row.agent_id, await asyncio.to_thread(hash_password, password))
        return Principal(agent_id=row.agent_id, username=row.username, role=row.role)

    async def _store_hash(self, agent_id: str, hashed: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                accounts_table.update()
                .where(accounts_table.c.agent_id == agent_id)
                .values(password_hash=hashed, updated_at=time.time())
            )

    async def get(self, agent_id: str) -> AccountView | None:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                sa.select(*_VIEW_COLUMNS).where(accounts_table.c.agent_id == agent_id)
            )
            row = result.first()
        return None if row is None else _view(row)

    async def by_username(self, username: str) -> AccountView | None:
        try:
            name = normalize_username(username)
        except AccountError:
            return None
        async with self._engine.connect() as conn:
            result = await conn.execute(
                sa.select(*_VIEW_COLUMNS).where(accounts_table.c.username == name)
            )
            row = result.first()
        return None if row is None else _view(row)

    async def list(self) -> list[AccountView]:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                sa.select(*_VIEW_COLUMNS).order_by(accounts_table.c.username)
            )
            return [_view(r) for r in result]

    async def _update(self, agent_id: str, **values: Any) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                accounts_table.update()
                .where(accounts_table.c.agent_id == agent_id)
                .values(updated_at=time.time(), **values)
            )
            if result.rowcount == 0:
                raise AccountError("not_found", f"no account {agent_id!r}")

    async def set_password(self, agent_id: str, password: str) -> None:
        check_password(password)
        hashed = await asyncio.to_thread(hash_password, password)
        await self._update(agent_id, password_hash=hashed)
        log.info("password changed", agent=agent_id)

    async def set_role(self, agent_id: str, role: str) -> None:
        _check_role(role)
        await self._update(agent_id, role=role)

    async def disable(self, agent_id: str, disabled: bool = True) -> None:
        """A disabled account cannot log in (existing access tokens die within their short
        lifetime; refresh must look the account up and refuse)."""
        await self._update(agent_id, disabled=disabled)
        log.info("account disabled" if disabled else "account enabled", agent=agent_id)


# -- agent sessions --------------------------------------------------------------------------

#: mirrors cti/migrations/versions/cti_0002_agent_sessions.py (the migration creates it)
agent_sessions_table = sa.Table(
    "cti_agent_sessions",
    metadata,
    sa.Column("agent_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, server_default=""),
    sa.Column("device", sa.String(100), nullable=False),
    sa.Column("server", sa.String(64), nullable=True),
    sa.Column("queues", sa.Text(), nullable=False, server_default="[]"),
    sa.Column("paused", sa.String(64), nullable=True),
    sa.Column("logged_in_at", sa.Float(), nullable=False),
    sa.Column("state_since", sa.Float(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
)


@dataclass(frozen=True, slots=True)
class AgentSession:
    """What survives a restart of an agent's login: the device and queues Asterisk still has
    as queue members, the agent's own pause (reason) and when login and pause began."""

    agent_id: str
    name: str
    device: str
    server: str | None
    queues: tuple[str, ...]
    paused: str | None
    logged_in_at: float
    state_since: float


class AgentSessionStore:
    """Agent logins in the accounts database. Written on login, logout, pause and unpause (rare
    user actions, one small write each); read once at start-up."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, saves: Sequence[AgentSession], deletes: Sequence[str] = ()) -> None:
        """Store some sessions and remove others, in one transaction: a shift's logins come
        together, and one transaction per agent made 2,000 logins take seconds."""
        t = agent_sessions_table
        now = time.time()
        ids = [s.agent_id for s in saves] + list(deletes)
        rows = [
            {
                "agent_id": s.agent_id,
                "name": s.name,
                "device": s.device,
                "server": s.server,
                "queues": json.dumps(list(s.queues)),
                "paused": s.paused,
                "logged_in_at": s.logged_in_at,
                "state_since": s.state_since,
                "updated_at": now,
            }
            for s in saves
        ]
        async with self._engine.begin() as conn:
            for i in range(0, len(ids), 500):
                await conn.execute(t.delete().where(t.c.agent_id.in_(ids[i : i + 500])))
            if rows:
                await conn.execute(t.insert(), rows)

    async def load(self) -> list[AgentSession]:
        """Every saved session; a row that cannot be read is skipped (and logged), not fatal:
        the agent logs in again. (An account disabled meanwhile is logged out by the daemon
        once its AMI links are up: see cti.app.)"""
        t = agent_sessions_table
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(t).order_by(t.c.agent_id))).all()
        out: list[AgentSession] = []
        for r in rows:
            try:
                queues = json.loads(r.queues)
                if not isinstance(queues, list) or not all(isinstance(q, str) for q in queues):
                    raise ValueError("queues is not a list of names")
            except ValueError as e:
                log.warning("unreadable agent session skipped", agent=r.agent_id, error=str(e))
                continue
            out.append(
                AgentSession(
                    agent_id=r.agent_id,
                    name=r.name,
                    device=r.device,
                    server=r.server,
                    queues=tuple(queues),
                    paused=r.paused,
                    logged_in_at=float(r.logged_in_at),
                    state_since=float(r.state_since),
                )
            )
        return out
