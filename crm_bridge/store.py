"""The built-in CRM: the :class:`~crm_bridge.adapter.CrmAdapter` over our own SQL tables.

Why it looks the way it does:

* Identification sits in the call path, so it uses SQLAlchemy Core with statements built
  once, one indexed equality query per piece of evidence (phone: ``crm_phone.e164``; IVR id:
  the unique ``(id_type, value)``; e-mail), and a deadline (``CrmSettings.lookup_timeout``)
  after which it answers ``degraded`` instead of waiting on a locked database.
* Nothing is ever created by identifying: an unknown caller is ``none`` and the agent decides.
* Every change runs in one transaction together with its audit entries; on SQLite the write
  transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout
  instead of failing on a lock upgrade.
* Input is validated before the first write (lengths, types, custom fields, numbers), so a
  refused request leaves nothing half-written; errors name the field.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy import (
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row, RowMapping
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm_bridge.adapter import (
    CallbackView,
    Candidate,
    CaseView,
    Conflict,
    ConsentView,
    CustomerCard,
    CustomerSummary,
    Identification,
    Identity,
    InteractionRecord,
    InteractionView,
    NewCase,
    NewCustomer,
    NewPhone,
    NotFound,
    PhoneView,
    ValidationFailed,
)
from crm_bridge.audit import AuditView, audit, audit_row, diff, read_audit
from crm_bridge.customfields import (
    FieldDef,
    coerce_all,
    column_for,
    to_columns,
    validate_definition,
)
from crm_bridge.db import utcnow
from crm_bridge.models import (
    CALLBACK_STATES,
    CASE_STATUSES,
    CUSTOMER_KINDS,
    INTERACTION_CHANNELS,
    INTERACTION_DIRECTIONS,
    LIMITS,
    PHONE_KINDS,
    audit_t,
    callback_t,
    case_interaction_t,
    case_t,
    consent_t,
    custom_field_t,
    custom_value_t,
    customer_t,
    disposition_t,
    dnc_t,
    email_t,
    external_id_t,
    interaction_t,
    note_t,
    phone_t,
)
from crm_bridge.normalize import (
    InvalidEmail,
    InvalidNumber,
    is_withheld,
    normalize_email,
    parse_phone,
    search_key,
    search_key_last_first,
    timezone_for_number,
)
from crm_bridge.preload import preload
from crm_bridge.settings import CrmSettings
from crm_bridge.sqlite_writer import SqliteWriter, TableSql

__all__ = ["BuiltinCrm", "DispositionView"]

log = structlog.get_logger(__name__)
_R = TypeVar("_R")

_C = customer_t
_SUMMARY_COLS = (_C.c.id, _C.c.name, _C.c.kind, _C.c.postcode, _C.c.city, _C.c.segment, _C.c.vip)
_CARD_COLS = (
    *_SUMMARY_COLS,
    _C.c.street,
    _C.c.country,
    _C.c.language,
    _C.c.time_zone,
)

#: standard customer fields an update may set, and their maximum length (None: not text)
_STD_FIELDS: dict[str, int | None] = {
    "name": LIMITS["name"],
    "kind": 16,
    "street": LIMITS["street"],
    "postcode": LIMITS["postcode"],
    "city": LIMITS["city"],
    "country": LIMITS["country"],
    "segment": LIMITS["segment"],
    "vip": None,
    "language": LIMITS["language"],
    "time_zone": LIMITS["time_zone"],
}
#: columns computed from the name, never shown in audit entries
_DERIVED = ("name_key", "name_rkey")
_LANG_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_IDTYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: identity of an interaction; fields that a later record of the same leg may overwrite
_KEY_FIELDS = frozenset({"call_id", "leg", "channel"})
_PROGRESS_FIELDS = frozenset({"answered_at", "ended_at", "outcome"})
_E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PHONEISH_RE = re.compile(r"^[+0-9 ()./\-]{3,}$")
_DEFS_TTL = 10.0

# evidence weights: what the caller typed beats an e-mail beats a (possibly shared) line
_W_IVR = 4.0
_W_EMAIL = 2.0
_W_PHONE = {"mobile": 1.5, "landline": 1.0, "work": 0.8, "fax": 0.2, "other": 1.0}


@dataclass(frozen=True, slots=True)
class DispositionView:
    code: str
    label: str
    scope_kind: str
    scope: str
    effect: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "label": self.label or self.code,
            "scope_kind": self.scope_kind,
            "scope": self.scope,
            "effect": self.effect,
        }


@dataclass(slots=True)
class _Match:
    row: Any  # a Row of _CARD_COLS
    evidence: list[str] = field(default_factory=list)
    score: float = 0.0
    by_ivr: bool = False
    by_phone: bool = False


def _pk(ident: str | int | None, entity: str) -> int:
    """Our integer key from an API id; anything else is an unknown id, not a crash."""
    text = str(ident).strip() if ident is not None else ""
    # isdigit() alone accepts "³" and other Unicode digits, which int() refuses
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise NotFound(entity, text)
    return int(text)


async def _update_audited(
    conn: AsyncConnection,
    table: Table,
    entity: str,
    row_id: int,
    old: RowMapping,
    changes: dict[str, Any],
    actor: str,
    *,
    stamp: bool = True,
) -> None:
    """Write `changes` to one row and, in the same transaction, its audit entry (the values
    before and after of just the changed columns); `stamp` also sets updated_at."""
    before, after = diff(dict(old), changes)
    values = {**changes, "updated_at": utcnow()} if stamp else changes
    await conn.execute(update(table).where(table.c.id == row_id).values(**values))
    await audit(
        conn,
        actor=actor,
        entity=entity,
        entity_id=row_id,
        action="update",
        before=before,
        after=after,
    )


def _opt_str(v: int | None) -> str | None:
    return None if v is None else str(v)


def _text(field_name: str, value: Any, limit: int, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationFailed(field_name, f"expected text, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise ValidationFailed(field_name, "must not be empty")
    if len(value) > limit:
        raise ValidationFailed(field_name, f"longer than {limit} characters ({len(value)})")
    if "\x00" in value:
        raise ValidationFailed(field_name, "contains a NUL character")
    return value


def _aware(field_name: str, t: datetime | None) -> datetime | None:
    if t is None:
        return None
    if not isinstance(t, datetime):
        raise ValidationFailed(field_name, "expected a date and time")
    if t.tzinfo is None:
        raise ValidationFailed(field_name, "time needs a time zone (UTC offset)")
    return t


def _check_zone(field_name: str, tz: str) -> str:
    if not tz:
        return tz
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(field_name, f"unknown time zone {tz!r}") from None
    return tz


def _interaction_view(r: RowMapping, case_ids: Sequence[int] = ()) -> InteractionView:
    return InteractionView(
        id=str(r["id"]),
        customer_id=_opt_str(r["customer_id"]),
        direction=r["direction"],
        channel=r["channel"],
        call_id=r["call_id"],
        leg=r["leg"],
        number=r["number"],
        did=r["did"],
        offered_at=r["offered_at"],
        answered_at=r["answered_at"],
        ended_at=r["ended_at"],
        queue=r["queue"],
        agent=r["agent"],
        campaign=r["campaign"],
        outcome=r["outcome"],
        notes=r["notes"],
        disposition=r["disposition"],
        case_ids=tuple(str(c) for c in case_ids),
    )


def _case_view(r: RowMapping) -> CaseView:
    return CaseView(
        id=str(r["id"]),
        customer_id=_opt_str(r["customer_id"]),
        type=r["type"],
        category=r["category"],
        subcategory=r["subcategory"],
        subject=r["subject"],
        status=r["status"],
        owner=r["owner"],
        opened_at=r["opened_at"],
        closed_at=r["closed_at"],
    )


def _callback_view(r: RowMapping) -> CallbackView:
    return CallbackView(
        id=str(r["id"]),
        number=r["number"],
        due_at=r["due_at"],
        time_zone=r["time_zone"],
        agent=r["agent"],
        state=r["state"],
        customer_id=_opt_str(r["customer_id"]),
        interaction_id=_opt_str(r["interaction_id"]),
        campaign=r["campaign"],
        note=r["note"],
        created_by=r["created_by"],
    )


def _summary(r: Row[Any] | RowMapping) -> CustomerSummary:
    m = r._mapping if isinstance(r, Row) else r
    return CustomerSummary(
        id=str(m["id"]),
        name=m["name"],
        kind=m["kind"],
        postcode=m["postcode"],
        city=m["city"],
        segment=m["segment"],
        vip=bool(m["vip"]),
    )


def _row_class(keys: Sequence[str]) -> type[tuple[Any, ...]]:
    """Rows readable both as ``r.name`` and ``r["name"]``, whatever path produced them."""
    base = namedtuple("_Row", list(keys))  # type: ignore[misc]

    class _Row(base):
        __slots__ = ()

        def __getitem__(self, k: Any) -> Any:
            return getattr(self, k) if isinstance(k, str) else base.__getitem__(self, k)

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(self._asdict())

    return _Row


class _Prepared:
    """A read statement of the hot path, runnable through SQLAlchemy or raw sqlite3."""

    __slots__ = ("cls", "raw", "stmt")

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt
        self.cls: Any = _row_class([c.key for c in stmt.selected_columns])
        #: raw SQLite path: (sql, parameter names, result processors, literal parameters)
        self.raw: tuple[str, tuple[str, ...], list[Any], dict[str, Any]] | None = None


class _SaReader:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def all(self, q: _Prepared, params: Mapping[str, Any]) -> list[Any]:
        make = q.cls._make
        return [make(r) for r in self.conn.execute(q.stmt, params)]


class _RawReader:
    """Runs prepared statements on a sqlite3 connection without SQLAlchemy's per-statement
    bookkeeping; the SQL text and result processors still come from SQLAlchemy, once."""

    __slots__ = ("conn", "dialect")

    def __init__(self, conn: Any, dialect: Any) -> None:
        self.conn = conn
        self.dialect = dialect

    def all(self, q: _Prepared, params: Mapping[str, Any]) -> list[Any]:
        raw = q.raw
        if raw is None:
            compiled = q.stmt.compile(dialect=self.dialect)
            procs = [
                c.type.dialect_impl(self.dialect).result_processor(self.dialect, None)
                for c in q.stmt.selected_columns
            ]
            raw = q.raw = (
                compiled.string,
                tuple(compiled.positiontup or ()),
                procs,
                dict(compiled.params),
            )
        sql, names, procs, fixed = raw
        args = [params[n] if n in params else fixed[n] for n in names]
        rows = self.conn.execute(sql, args).fetchall()
        make = q.cls._make
        if not any(procs):
            return [make(r) for r in rows]
        return [make(p(v) if p else v for p, v in zip(procs, r, strict=True)) for r in rows]


_Reader = _SaReader | _RawReader

# statements built once (SQLAlchemy caches their compiled form)
_Q_PHONE = _Prepared(
    select(*_CARD_COLS, phone_t.c.kind.label("phone_kind"))
    .select_from(phone_t.join(_C, _C.c.id == phone_t.c.customer_id))
    .where(phone_t.c.e164 == bindparam("n"))
    .limit(bindparam("lim"))
)
_Q_EXTID = _Prepared(
    select(*_CARD_COLS)
    .select_from(external_id_t.join(_C, _C.c.id == external_id_t.c.customer_id))
    .where(external_id_t.c.id_type == bindparam("t"), external_id_t.c.value == bindparam("v"))
)
_Q_EMAIL = _Prepared(
    select(*_CARD_COLS)
    .select_from(email_t.join(_C, _C.c.id == email_t.c.customer_id))
    .where(email_t.c.email == bindparam("e"))
    .limit(bindparam("lim"))
)
_Q_CUSTOMER = _Prepared(select(*_CARD_COLS).where(_C.c.id == bindparam("c")))
_Q_PHONES = _Prepared(
    select(phone_t.c.e164, phone_t.c.raw, phone_t.c.kind, phone_t.c.extension)
    .where(phone_t.c.customer_id == bindparam("c"))
    .order_by(phone_t.c.position, phone_t.c.id)
)
_Q_EMAILS = _Prepared(
    select(email_t.c.email)
    .where(email_t.c.customer_id == bindparam("c"))
    .order_by(email_t.c.position, email_t.c.id)
)
_Q_EXTIDS = _Prepared(
    select(external_id_t.c.id_type, external_id_t.c.value)
    .where(external_id_t.c.customer_id == bindparam("c"))
    .order_by(external_id_t.c.id_type, external_id_t.c.value)
)
#: phones, e-mails and external ids of one customer in one round trip
_Q_CONTACTS = _Prepared(
    union_all(
        select(
            literal("p").label("k"),
            phone_t.c.e164.label("a"),
            phone_t.c.raw.label("b"),
            phone_t.c.kind.label("c"),
            phone_t.c.extension.label("d"),
            phone_t.c.position.label("pos"),
            phone_t.c.id.label("rid"),
        ).where(phone_t.c.customer_id == bindparam("c")),
        select(
            literal("e"),
            email_t.c.email,
            literal(""),
            literal(""),
            literal(""),
            email_t.c.position,
            email_t.c.id,
        ).where(email_t.c.customer_id == bindparam("c")),
        select(
            literal("x"),
            external_id_t.c.id_type,
            external_id_t.c.value,
            literal(""),
            literal(""),
            literal(0),
            external_id_t.c.id,
        ).where(external_id_t.c.customer_id == bindparam("c")),
    ).order_by(text("1"), text("6"), text("7"))
)
_Q_CUSTOM = _Prepared(
    select(
        custom_value_t.c.field_id,
        custom_value_t.c.value_text,
        custom_value_t.c.value_number,
        custom_value_t.c.value_date,
        custom_value_t.c.value_bool,
    ).where(custom_value_t.c.customer_id == bindparam("c"))
)
_Q_CONSENT = _Prepared(
    select(
        consent_t.c.channel,
        consent_t.c.purpose,
        consent_t.c.granted,
        consent_t.c.source,
        consent_t.c.at,
    )
    .where(consent_t.c.customer_id == bindparam("c"))
    .order_by(consent_t.c.at.desc(), consent_t.c.id.desc())
)
_Q_OPEN_CASES = _Prepared(
    select(case_t)
    .where(case_t.c.customer_id == bindparam("c"), case_t.c.status != "closed")
    .order_by(case_t.c.opened_at.desc(), case_t.c.id.desc())
    .limit(50)
)
_Q_RECENT = _Prepared(
    select(interaction_t)
    .where(interaction_t.c.customer_id == bindparam("c"))
    .order_by(interaction_t.c.offered_at.desc(), interaction_t.c.id.desc())
    .limit(bindparam("lim"))
)
_Q_RECENT_LINKS = _Prepared(
    select(case_interaction_t.c.interaction_id, case_interaction_t.c.case_id)
    .where(
        case_interaction_t.c.interaction_id.in_(
            select(interaction_t.c.id)
            .where(interaction_t.c.customer_id == bindparam("c"))
            .order_by(interaction_t.c.offered_at.desc(), interaction_t.c.id.desc())
            .limit(bindparam("lim"))
            .scalar_subquery()
        )
    )
    .order_by(case_interaction_t.c.case_id)
)

# --- batched interaction writes (record_interactions): built once, compiled once
#: keys per IN list: far below SQLite's and asyncpg's bound-parameter limits
_BATCH_IN = 500
_Q_CUSTOMERS_IN = select(_C.c.id).where(_C.c.id.in_(bindparam("ids", expanding=True)))
_Q_LEGS_IN = select(interaction_t).where(
    interaction_t.c.channel.in_(bindparam("channels", expanding=True)),
    interaction_t.c.call_id.in_(bindparam("call_ids", expanding=True)),
)
#: one multi-row INSERT ... RETURNING; the rows come back in no promised order (asking for
#: the parameters' order makes SQLAlchemy send one INSERT per row on SQLite): matched by key
_INSERT_LEG = insert(interaction_t).returning(
    interaction_t.c.id, interaction_t.c.channel, interaction_t.c.call_id, interaction_t.c.leg
)
#: the SET clause comes from the parameter sets' keys (all alike within one executemany)
_UPDATE_LEG = update(interaction_t).where(interaction_t.c.id == bindparam("_id"))


def _chunks(items: Sequence[int], n: int) -> list[Sequence[int]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


class _SaLegOps:
    """The statements of a batched leg write through SQLAlchemy (any database)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def customers_in(self, ids: Sequence[int]) -> set[int]:
        return set(self.conn.execute(_Q_CUSTOMERS_IN, {"ids": list(ids)}).scalars())

    def legs_in(self, channels: Sequence[str], call_ids: Sequence[str]) -> list[Mapping[str, Any]]:
        rows = self.conn.execute(_Q_LEGS_IN, {"channels": channels, "call_ids": call_ids})
        return [dict(r) for r in rows.mappings()]

    def insert_legs(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(_INSERT_LEG, list(rows))]

    def update_legs(self, params: Sequence[Mapping[str, Any]]) -> None:
        self.conn.execute(_UPDATE_LEG, list(params))

    def insert_audits(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.conn.execute(insert(audit_t), list(rows))


class _RawLegOps:
    """The same statements on the SQLite writer thread's plain sqlite3 connection."""

    __slots__ = ("conn", "sql")

    def __init__(self, conn: sqlite3.Connection, sql: _RawTables) -> None:
        self.conn = conn
        self.sql = sql

    def customers_in(self, ids: Sequence[int]) -> set[int]:
        return {r["id"] for r in self.sql.customer.select_in(self.conn, ["id"], {"id": ids})}

    def legs_in(self, channels: Sequence[str], call_ids: Sequence[str]) -> list[Mapping[str, Any]]:
        t = self.sql.interaction
        return list(t.select_in(self.conn, t.columns, {"channel": channels, "call_id": call_ids}))

    def insert_legs(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return self.sql.interaction.insert(self.conn, rows, _LEG_RETURNING)

    def update_legs(self, params: Sequence[Mapping[str, Any]]) -> None:
        self.sql.interaction.update_by(self.conn, "_id", params)

    def insert_audits(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.sql.audit.insert(self.conn, rows)


@dataclass(frozen=True, slots=True)
class _RawTables:
    customer: TableSql
    interaction: TableSql
    audit: TableSql


_LegOps = _SaLegOps | _RawLegOps
#: what the leg insert returns, in this order (both paths)
_LEG_RETURNING = ("id", "channel", "call_id", "leg")


def _record_many_sync(ops: _LegOps, cleaned: Sequence[tuple[dict[str, Any], str]]) -> list[str]:
    """The body of :meth:`BuiltinCrm.record_interactions`, inside the caller's transaction
    (synchronous: through ``run_sync`` with SQLAlchemy, or on the SQLite writer thread)."""
    # a leg named twice is applied in order: its second record goes into a later round,
    # which sees the row the first one inserted
    rounds: list[list[int]] = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, (vals, _actor) in enumerate(cleaned):
        key = (vals["channel"], vals["call_id"], vals["leg"])
        r = seen.get(key, -1) + 1
        seen[key] = r
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(i)
    ids = [""] * len(cleaned)
    wanted = {v["customer_id"] for v, _a in cleaned if v["customer_id"] is not None}
    if wanted:
        have = ops.customers_in(sorted(wanted))
        if wanted - have:
            raise NotFound("customer", str(min(wanted - have)))
    for members in rounds:
        for chunk in _chunks(members, _BATCH_IN):
            _record_round(ops, cleaned, chunk, ids)
    return ids


def _record_round(
    ops: _LegOps,
    cleaned: Sequence[tuple[dict[str, Any], str]],
    members: Sequence[int],
    ids: list[str],
) -> None:
    """Legs with distinct keys: one IN select, one insert, one audit insert, updates."""
    recs = [cleaned[i][0] for i in members]
    rows = ops.legs_in(sorted({v["channel"] for v in recs}), sorted({v["call_id"] for v in recs}))
    old_of = {(r["channel"], r["call_id"], r["leg"]): r for r in rows}
    now = utcnow()
    fresh: list[int] = []
    audits: dict[int, dict[str, Any]] = {}
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for i in members:
        vals, actor = cleaned[i]
        old = old_of.get((vals["channel"], vals["call_id"], vals["leg"]))
        if old is None:
            fresh.append(i)
            continue
        ids[i] = str(old["id"])
        # the same leg again: fill in what we learnt, never erase what we knew; how the
        # leg started is fixed once known, how it went on (answer, end, outcome) may move
        changes = {
            k: v
            for k, v in vals.items()
            if k not in _KEY_FIELDS
            and v not in (None, "")
            and old[k] != v
            and (k in _PROGRESS_FIELDS or old[k] in (None, ""))
        }
        if not changes:
            continue
        before, after = diff(dict(old), changes)
        updates.setdefault(tuple(sorted(changes)), []).append(
            {**changes, "updated_at": now, "_id": old["id"]}
        )
        audits[i] = audit_row(
            actor=actor,
            entity="interaction",
            entity_id=old["id"],
            action="update",
            before=before,
            after=after,
            at=now,
        )
    if fresh:
        inserted = ops.insert_legs(
            [{**cleaned[i][0], "created_at": now, "updated_at": now} for i in fresh]
        )
        id_of = {(ch, call_id, leg): iid for iid, ch, call_id, leg in inserted}
        for i in fresh:
            vals, actor = cleaned[i]
            iid = id_of[(vals["channel"], vals["call_id"], vals["leg"])]
            ids[i] = str(iid)
            after = diff({}, {k: v for k, v in vals.items() if v not in (None, "")})[1]
            audits[i] = audit_row(
                actor=actor,
                entity="interaction",
                entity_id=iid,
                action="create",
                after=after,
                at=now,
            )
    for params in updates.values():
        ops.update_legs(params)
    if audits:
        # in the order of the records, as one call per record would have written them
        ops.insert_audits([audits[i] for i in members if i in audits])


class BuiltinCrm:
    """The embedded CRM store. ``engine`` must point at a migrated database."""

    def __init__(self, engine: AsyncEngine, settings: CrmSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._sqlite = engine.dialect.name == "sqlite"
        self._defs: dict[str, FieldDef] = {}
        self._defs_by_id: dict[int, FieldDef] = {}
        self._defs_loaded = -1e18
        self._candidate_limit = settings.max_candidates
        self._normalize_cached = lru_cache(maxsize=16384)(self._normalize_uncached)
        #: absolute monotonic deadline of the read running on the inline SQLite reader
        self._deadline = float("inf")
        self._reader: Engine | None = self._make_reader() if self._sqlite else None
        self._raw: Any = None
        self._raw_thread = 0
        #: inline reads allowed (false while warm_up brings the file into the OS cache)
        self._inline = True
        self._writer: SqliteWriter | None = None
        self._raw_tables: _RawTables | None = None
        if self._reader is not None and not self._reader.url.query:
            # (a URL with query options, e.g. a `file:` URI, keeps the SQLAlchemy path: the
            # writer opens the plain file name.) Concurrent writers queue as long as the
            # engine's own connections do.
            self._writer = SqliteWriter(self._reader.url.database or "", busy_timeout_ms=10_000)
            d = self._reader.dialect
            self._raw_tables = _RawTables(
                TableSql(_C, d), TableSql(interaction_t, d), TableSql(audit_t, d)
            )

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        """Finish the queued writes, release the inline reader (the async engine belongs to
        the caller)."""
        if self._writer is not None:
            await self._writer.close()
        self._drop_raw()
        if self._reader is not None:
            self._reader.dispose()
            self._reader = None

    # ------------------------------------------------------------------ plumbing

    def _make_reader(self) -> Engine | None:
        """A synchronous, read-only SQLite connection pool used inline on the event loop.

        Why inline: an indexed read of a few cached pages takes microseconds, while handing
        each statement to aiosqlite's worker thread costs a thread switch per call (0.1-1 ms
        on a busy host) - more than the query, and the p99 target of a lookup is 1 ms.
        Guard rails: ``query_only`` (it can never write), WAL (readers never wait for the
        writer), a busy timeout and a progress handler that aborts any statement running past
        the lookup deadline, so the loop is never held longer than ``lookup_timeout``.
        """
        url = self._engine.url
        db = url.database or ""
        if not db or db == ":memory:" or "mode=memory" in str(url):
            return None
        reader = create_engine(url.set(drivername="sqlite+pysqlite"), pool_size=2, max_overflow=4)
        busy_ms = max(1, int(self._settings.lookup_timeout * 1000))

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("PRAGMA query_only=ON")
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
                cur.execute("PRAGMA cache_size=-65536")
                # memory-mapped reads: a page already in the OS cache costs no system call
                cur.execute("PRAGMA mmap_size=4294967296")
                cur.execute("PRAGMA temp_store=MEMORY")
            finally:
                cur.close()
            dbapi_conn.set_progress_handler(self._past_deadline, 2000)

        event.listen(reader, "connect", on_connect)
        return reader

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    async def _read(self, fn: Callable[..., _R], *args: Any, limit_s: float | None = None) -> _R:
        """Run a synchronous read function on the fastest path this database allows."""
        if self._reader is not None and self._inline:
            self._deadline = time.monotonic() + (limit_s or 3600.0)
            try:
                with self._reader.connect() as conn:
                    return fn(conn, *args)
            finally:
                self._deadline = float("inf")
        if limit_s is None:
            async with self._engine.connect() as aconn:
                return await aconn.run_sync(fn, *args)
        async with asyncio.timeout(limit_s):
            async with self._engine.connect() as aconn:
                return await aconn.run_sync(fn, *args)

    async def _read_fast(
        self, fn: Callable[..., _R], *args: Any, limit_s: float | None = None
    ) -> _R:
        """Like :meth:`_read` for the hot path: ``fn`` gets a reader of prepared statements
        (raw sqlite3 inline on SQLite, SQLAlchemy on other databases)."""
        if self._reader is not None and self._inline:
            if self._raw is not None and self._raw_thread != threading.get_ident():
                self._drop_raw()  # sqlite3 connections belong to the thread that made them
            if self._raw is None:
                self._raw = self._reader.raw_connection()
                self._raw_thread = threading.get_ident()
            rd = _RawReader(self._raw.driver_connection, self._reader.dialect)
            self._deadline = time.monotonic() + (limit_s or 3600.0)
            try:
                return fn(rd, *args)
            except sqlite3.Error:
                self._drop_raw()
                raise
            finally:
                self._deadline = float("inf")

        def run(conn: Connection) -> _R:
            return fn(_SaReader(conn), *args)

        if limit_s is None:
            async with self._engine.connect() as aconn:
                return await aconn.run_sync(run)
        async with asyncio.timeout(limit_s):
            async with self._engine.connect() as aconn:
                return await aconn.run_sync(run)

    def _drop_raw(self) -> None:
        if self._raw is not None:
            try:
                self._raw.invalidate()
            except Exception:  # another thread's connection cannot even be closed here
                pass
            finally:
                self._raw = None

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.begin() as conn:
            if self._sqlite:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    def _parse_number(self, raw: str, field_name: str) -> tuple[str, str]:
        try:
            p = parse_phone(
                raw, region=self._settings.default_region, default_area=self._settings.default_area
            )
        except InvalidNumber as e:
            raise ValidationFailed(field_name, str(e)) from None
        return p.e164, p.extension

    def _normalize_lookup_number(self, raw: str) -> str | None:
        """E.164 for a lookup, or None. Canonical E.164 input is taken as is (a number that
        is not valid simply matches nothing: every stored number was validated); other
        forms go through the normalizer, memoized because callers call again."""
        text = raw.strip()
        if _E164_RE.match(text):
            return text
        return self._normalize_cached(text)

    def _normalize_uncached(self, text: str) -> str | None:
        try:
            return parse_phone(
                text,
                region=self._settings.default_region,
                default_area=self._settings.default_area,
            ).e164
        except InvalidNumber:
            return None

    def _defs_sync(self, conn: Connection) -> dict[str, FieldDef]:
        now = time.monotonic()
        if now - self._defs_loaded < _DEFS_TTL:
            return self._defs
        rows = conn.execute(
            select(custom_field_t).order_by(custom_field_t.c.position, custom_field_t.c.id)
        ).mappings()
        defs = {
            r["name"]: FieldDef(
                id=r["id"],
                name=r["name"],
                type=r["type"],
                label=r["label"],
                choices=tuple(r["choices"] or ()),
                required=bool(r["required"]),
                position=r["position"],
            )
            for r in rows
        }
        self._defs = defs
        self._defs_by_id = {d.id: d for d in defs.values()}
        self._defs_loaded = now
        return defs

    async def _field_defs(self, conn: AsyncConnection) -> dict[str, FieldDef]:
        return await conn.run_sync(self._defs_sync)

    def _defs_cached(self) -> dict[str, FieldDef]:
        """The field definitions without a query: the hot path never waits for a reload;
        any write or non-hot read refreshes them (and every change here invalidates)."""
        return self._defs

    def _invalidate_defs(self) -> None:
        self._defs_loaded = -1e18

    async def _require_customer(self, conn: AsyncConnection, cid: int) -> RowMapping:
        row = (await conn.execute(_Q_CUSTOMER.stmt, {"c": cid})).mappings().first()
        if row is None:
            raise NotFound("customer", str(cid))
        return row

    def _card_sa(self, conn: Connection, row: Any) -> CustomerCard:
        return self._card_sync(_SaReader(conn), row)

    # ------------------------------------------------------------------ identification

    async def warm_up(self) -> None:
        """Bring a SQLite file into the OS cache (see crm_bridge/preload.py: until then reads
        run off the event loop), then a lookup and a customer card before the first caller's:
        opening the inline reader, loading the number metadata and compiling the lookup and
        card statements took the first pops after a start ~10-50 ms."""
        import phonenumbers

        if self._reader is not None and self._settings.preload_mb > 0:
            await self._preload(self._reader.url.database or "")

        example = phonenumbers.example_number(self._settings.default_region or "US")
        number = (
            "+4930123456"
            if example is None
            else phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        )
        await self.identify(Identity(number=number))
        async with self._engine.connect() as conn:
            first = (await conn.execute(select(func.min(_C.c.id)))).scalar()
        if first is not None:
            await self.card(str(first))

    async def _preload(self, database: str) -> None:
        stop = threading.Event()
        self._inline = False
        try:
            done = await asyncio.to_thread(preload, database, self._settings.preload_mb << 20, stop)
            log.info(
                "crm file preloaded",
                mode=done.mode,
                mib=round(done.bytes_read / 2**20, 1),
                seconds=round(done.seconds, 2),
            )
        finally:
            stop.set()  # cancelled (the daemon stops): the thread ends at its next chunk
            self._inline = True

    async def identify(self, who: Identity) -> Identification:
        raw = who.number
        email_given = bool(who.email and who.email.strip())
        withheld = is_withheld(raw) and not (raw is None and (email_given or bool(who.ivr)))
        number = None if is_withheld(raw) else self._normalize_lookup_number(raw or "")
        bad_number = None
        if raw is not None and not is_withheld(raw) and number is None:
            bad_number = f"caller number {raw[:40]!r} is not a valid number"
        email = None
        if email_given:
            try:
                email = normalize_email(who.email or "")
            except InvalidEmail:
                email = None
        ivr = [
            (t.strip().lower(), v.strip())
            for t, v in who.ivr.items()
            if isinstance(v, str) and v.strip() and len(v.strip()) <= LIMITS["id_value"]
        ]
        if number is None and email is None and not ivr:
            return Identification(
                status="none", number_e164=None, withheld=withheld, reason=bad_number
            )
        try:
            return await self._read_fast(
                self._identify_sync,
                number,
                ivr,
                email,
                withheld,
                bad_number,
                limit_s=self._settings.lookup_timeout,
            )
        except TimeoutError:
            reason = "crm timeout"
        except (OperationalError, sqlite3.OperationalError) as e:
            # the inline reader's progress handler interrupts a query past the deadline
            reason = "crm timeout" if "interrupt" in str(e).lower() else "crm error"
            if reason == "crm error":
                log.error("crm lookup failed", number=number, error=str(e)[:200])
        except sqlite3.Error as e:
            log.error("crm lookup failed", number=number, error=str(e)[:200])
            reason = f"crm error: {type(e).__name__}"
        except (SQLAlchemyError, OSError) as e:
            log.error("crm lookup failed", number=number, error=type(e).__name__)
            reason = f"crm error: {type(e).__name__}"
        if reason == "crm timeout":
            log.warning(
                "crm lookup timed out", number=number, timeout=self._settings.lookup_timeout
            )
        return Identification(
            status="degraded", number_e164=number, withheld=withheld, reason=reason
        )

    def _identify_sync(
        self,
        rd: _Reader,
        number: str | None,
        ivr: Sequence[tuple[str, str]],
        email: str | None,
        withheld: bool,
        bad_number: str | None,
    ) -> Identification:
        matches: dict[int, _Match] = {}
        too_many = False
        lim = self._candidate_limit + 1
        if number is not None:
            rows = rd.all(_Q_PHONE, {"n": number, "lim": lim})
            too_many = len(rows) >= lim
            for r in rows:
                m = matches.get(r.id)
                if m is None:
                    m = matches[r.id] = _Match(r)
                kind = r.phone_kind
                m.evidence.append(f"phone {number} ({kind})")
                m.score += _W_PHONE.get(kind, 1.0)
                m.by_phone = True
        for id_type, value in ivr:
            hits = rd.all(_Q_EXTID, {"t": id_type, "v": value})
            hit = hits[0] if hits else None
            if hit is None:
                continue
            m = matches.get(hit.id)
            if m is None:
                m = matches[hit.id] = _Match(hit)
            m.evidence.append(f"{id_type} {value}")
            m.score += _W_IVR
            m.by_ivr = True
        if email is not None:
            for r in rd.all(_Q_EMAIL, {"e": email, "lim": lim}):
                m = matches.get(r.id)
                if m is None:
                    m = matches[r.id] = _Match(r)
                m.evidence.append(f"email {email}")
                m.score += _W_EMAIL

        if not matches:
            return Identification(
                status="none", number_e164=number, withheld=withheld, reason=bad_number
            )
        ranked = sorted(matches.values(), key=lambda m: (-m.score, m.row.name, m.row.id))
        by_ivr = [m for m in ranked if m.by_ivr]
        by_phone = [m for m in ranked if m.by_phone]
        conflict = (len(by_ivr) > 1) or (
            bool(by_ivr) and bool(by_phone) and not any(m.by_ivr for m in by_phone)
        )
        if conflict:
            best = by_ivr[0]
            return Identification(
                status="conflict",
                number_e164=number,
                withheld=withheld,
                card=self._card_sync(rd, best.row),
                candidates=tuple(self._candidate(m) for m in ranked),
                reason="caller number and IVR id point to different customers"
                if len(by_ivr) == 1
                else "the IVR ids point to different customers",
            )
        # an IVR id (or the only match) settles it; a shared line alone never does
        chosen = by_ivr[0] if len(by_ivr) == 1 else (ranked[0] if len(ranked) == 1 else None)
        if chosen is not None:
            return Identification(
                status="one",
                number_e164=number,
                withheld=withheld,
                card=self._card_sync(rd, chosen.row),
                candidates=(self._candidate(chosen),),
            )
        return Identification(
            status="many",
            number_e164=number,
            withheld=withheld,
            candidates=tuple(self._candidate(m) for m in ranked[: self._candidate_limit]),
            reason=f"more than {self._candidate_limit} customers share this number"
            if too_many
            else None,
        )

    @staticmethod
    def _candidate(m: _Match) -> Candidate:
        return Candidate(
            customer=_summary(m.row), evidence=tuple(m.evidence), score=round(m.score, 3)
        )

    def _card_sync(self, rd: _Reader, c: Any) -> CustomerCard:
        cid = c["id"]
        p = {"c": cid}
        phone_list: list[PhoneView] = []
        email_list: list[str] = []
        ext_list: list[tuple[str, str]] = []
        for r in rd.all(_Q_CONTACTS, p):
            if r.k == "p":
                phone_list.append(PhoneView(e164=r.a, raw=r.b, kind=r.c, extension=r.d))
            elif r.k == "e":
                email_list.append(r.a)
            else:
                ext_list.append((r.a, r.b))
        phones, emails = tuple(phone_list), tuple(email_list)
        ext = tuple(sorted(ext_list))
        defs = self._defs_cached()
        custom: dict[str, Any] = dict.fromkeys(defs)
        if defs:
            by_id = self._defs_by_id
            for cv in rd.all(_Q_CUSTOM, p):
                d = by_id.get(cv["field_id"])
                if d is not None:
                    v = cv[column_for(d.type)]
                    custom[d.name] = bool(v) if d.type == "bool" and v is not None else v
        consent: dict[tuple[str, str], ConsentView] = {}
        for r in rd.all(_Q_CONSENT, p):
            key = (r.channel, r.purpose)
            if key not in consent:
                consent[key] = ConsentView(
                    channel=r.channel,
                    purpose=r.purpose,
                    granted=bool(r.granted),
                    source=r.source,
                    at=r.at,
                )
        cases = tuple(_case_view(r) for r in rd.all(_Q_OPEN_CASES, p))
        recent = self._recent_sync(rd, cid, self._settings.recent_interactions)
        return CustomerCard(
            id=str(cid),
            name=c["name"],
            kind=c["kind"],
            street=c["street"],
            postcode=c["postcode"],
            city=c["city"],
            country=c["country"],
            segment=c["segment"],
            vip=bool(c["vip"]),
            language=c["language"],
            time_zone=c["time_zone"],
            phones=phones,
            emails=emails,
            external_ids=ext,
            custom=custom,
            consent=tuple(consent[k] for k in sorted(consent)),
            open_cases=cases,
            recent=tuple(recent),
        )

    def _recent_sync(self, rd: _Reader, cid: int, limit: int) -> list[InteractionView]:
        if limit <= 0:
            return []
        p = {"c": cid, "lim": limit}
        rows = rd.all(_Q_RECENT, p)
        if not rows:
            return []
        links: dict[int, list[int]] = {}
        for link in rd.all(_Q_RECENT_LINKS, p):
            links.setdefault(link.interaction_id, []).append(link.case_id)
        return [_interaction_view(r, links.get(r.id, ())) for r in rows]

    @staticmethod
    def _with_cases_sync(conn: Connection, rows: Sequence[RowMapping]) -> list[InteractionView]:
        if not rows:
            return []
        links: dict[int, list[int]] = {}
        ids = [r["id"] for r in rows]
        q = (
            select(case_interaction_t.c.interaction_id, case_interaction_t.c.case_id)
            .where(case_interaction_t.c.interaction_id.in_(ids))
            .order_by(case_interaction_t.c.case_id)
        )
        for iid, cid in conn.execute(q).all():
            links.setdefault(iid, []).append(cid)
        return [_interaction_view(r, links.get(r["id"], ())) for r in rows]

    async def _with_cases(
        self, conn: AsyncConnection, rows: Sequence[RowMapping]
    ) -> list[InteractionView]:
        return await conn.run_sync(self._with_cases_sync, rows)

    # ------------------------------------------------------------------ reading

    async def card(self, customer_id: str) -> CustomerCard | None:
        try:
            cid = _pk(customer_id, "customer")
        except NotFound:
            return None

        def read(rd: _Reader) -> CustomerCard | None:
            rows = rd.all(_Q_CUSTOMER, {"c": cid})
            return self._card_sync(rd, rows[0]) if rows else None

        return await self._read_fast(read)

    async def history(self, customer_id: str, limit: int = 20) -> list[InteractionView]:
        cid = _pk(customer_id, "customer")
        limit = max(0, min(int(limit), 1000))

        def read(rd: _Reader) -> list[InteractionView]:
            if not rd.all(_Q_CUSTOMER, {"c": cid}):
                raise NotFound("customer", str(cid))
            return self._recent_sync(rd, cid, limit)

        return await self._read_fast(read)

    async def search(self, query: str, limit: int = 20) -> list[CustomerSummary]:
        """Exact phone number (any format), e-mail, external id value or postcode, and name
        prefix, case and accent insensitive, on the whole name or on its last word (the
        family name: "müll" finds "Anna Müller"). Exact matches come first."""
        q = (query or "").strip()[:200]
        limit = max(1, min(int(limit), 200))
        if not q:
            return []
        stmts: list[Any] = []
        if "@" in q:
            try:
                e = normalize_email(q)
            except InvalidEmail:
                e = q.lower()
            stmts.append(
                select(*_SUMMARY_COLS)
                .select_from(email_t.join(_C, _C.c.id == email_t.c.customer_id))
                .where(email_t.c.email == e)
            )
        if _PHONEISH_RE.match(q) and sum(ch.isdigit() for ch in q) >= 3:
            n = self._normalize_lookup_number(q)
            if n is not None:
                stmts.append(
                    select(*_SUMMARY_COLS)
                    .select_from(phone_t.join(_C, _C.c.id == phone_t.c.customer_id))
                    .where(phone_t.c.e164 == n)
                )
        if len(q) <= LIMITS["id_value"]:
            stmts.append(
                select(*_SUMMARY_COLS)
                .select_from(external_id_t.join(_C, _C.c.id == external_id_t.c.customer_id))
                .where(external_id_t.c.value == q)
            )
        if len(q) <= LIMITS["postcode"]:
            stmts.append(select(*_SUMMARY_COLS).where(_C.c.postcode == q).order_by(_C.c.name_key))
        key = search_key(q)
        if key:
            for col in (_C.c.name_key, _C.c.name_rkey):
                stmts.append(
                    select(*_SUMMARY_COLS)
                    .where(col >= key, col < key + "\U0010ffff")
                    .order_by(col, _C.c.id)
                )

        def read(conn: Connection) -> list[CustomerSummary]:
            found: dict[int, CustomerSummary] = {}
            for stmt in stmts:
                if len(found) >= limit:
                    break
                for r in conn.execute(stmt.limit(limit)).all():
                    if r.id not in found and len(found) < limit:
                        found[r.id] = _summary(r)
            return list(found.values())

        return await self._read(read)

    # ------------------------------------------------------------------ customers

    def _clean_std(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in fields.items():
            limit = _STD_FIELDS[name]
            if name == "vip":
                if not isinstance(value, bool):
                    raise ValidationFailed("vip", f"expected true or false, got {value!r}")
                out[name] = value
                continue
            assert limit is not None
            text = _text(name, value, limit, required=(name == "name"))
            if name == "kind" and text not in CUSTOMER_KINDS:
                raise ValidationFailed("kind", f"must be one of {', '.join(CUSTOMER_KINDS)}")
            if name == "country" and text and not (len(text) == 2 and text.isalpha()):
                raise ValidationFailed("country", "expected a two-letter ISO code such as DE")
            if name == "country":
                text = text.upper()
            if name == "language" and text and not _LANG_RE.match(text):
                raise ValidationFailed(
                    "language", f"expected a language tag like 'de', got {text!r}"
                )
            if name == "time_zone":
                _check_zone("time_zone", text)
            out[name] = text
        if "name" in out:
            out["name_key"] = search_key(out["name"])[: LIMITS["name"]]
            out["name_rkey"] = search_key_last_first(out["name"])[: LIMITS["name"]]
        return out

    async def create_customer(self, data: NewCustomer, *, actor: str) -> CustomerCard:
        std = self._clean_std(
            {
                "name": data.name,
                "kind": data.kind,
                "street": data.street,
                "postcode": data.postcode,
                "city": data.city,
                "country": data.country,
                "segment": data.segment,
                "vip": data.vip,
                "language": data.language,
                "time_zone": data.time_zone,
            }
        )
        phones = self._clean_phones(data.phones)
        emails = self._clean_emails(data.emails)
        ext = self._clean_external_ids(data.external_ids)
        now = utcnow()
        async with self._tx() as conn:
            defs = await self._field_defs(conn)
            custom = coerce_all(defs, data.custom)
            for d in defs.values():
                if d.required and custom.get(d.name) is None:
                    raise ValidationFailed(f"custom field {d.name!r}", "a value is required")
            await self._check_ext_free(conn, ext, None)
            cid = (
                await conn.execute(
                    insert(_C).returning(_C.c.id), {**std, "created_at": now, "updated_at": now}
                )
            ).scalar_one()
            await self._insert_contact_points(conn, cid, phones, emails, ext, start=0)
            await self._write_custom(conn, cid, defs, custom)
            await audit(
                conn,
                actor=actor,
                entity="customer",
                entity_id=cid,
                action="create",
                after={
                    **{k: v for k, v in std.items() if k not in _DERIVED},
                    "phones": [p[0] for p in phones],
                    "emails": list(emails),
                    "external_ids": dict(ext),
                    "custom": {k: v for k, v in custom.items() if v is not None},
                },
            )
            row = await self._require_customer(conn, cid)
            card = await conn.run_sync(self._card_sa, row)
        log.info("customer created", customer=cid, actor=actor)
        return card

    def _clean_phones(self, phones: Sequence[NewPhone | str]) -> list[tuple[str, str, str, str]]:
        out: list[tuple[str, str, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for i, p in enumerate(phones):
            ph = NewPhone(p) if isinstance(p, str) else p
            fname = f"phones[{i}]"
            raw = _text(fname, ph.number, LIMITS["phone_raw"], required=True)
            if ph.kind not in PHONE_KINDS:
                raise ValidationFailed(f"{fname}.kind", f"must be one of {', '.join(PHONE_KINDS)}")
            e164, ext = self._parse_number(raw, fname)
            if (e164, ext) in seen:
                continue
            seen.add((e164, ext))
            out.append((e164, raw, ph.kind, ext))
        return out

    @staticmethod
    def _clean_emails(emails: Sequence[str]) -> list[str]:
        out: list[str] = []
        for i, e in enumerate(emails):
            try:
                n = normalize_email(e)
            except InvalidEmail as err:
                raise ValidationFailed(f"emails[{i}]", str(err)) from None
            if n not in out:
                out.append(n)
        return out

    @staticmethod
    def _clean_external_ids(ext: Mapping[str, str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for t, v in ext.items():
            t2 = (t or "").strip().lower()
            if not _IDTYPE_RE.match(t2):
                raise ValidationFailed(
                    f"external_ids[{t!r}]", "id type must be a-z, 0-9, _ (max 32)"
                )
            out.append((t2, _text(f"external_ids[{t2!r}]", v, LIMITS["id_value"], required=True)))
        return out

    async def _check_ext_free(
        self, conn: AsyncConnection, ext: Sequence[tuple[str, str]], cid: int | None
    ) -> None:
        for t, v in ext:
            owner = (
                await conn.execute(
                    select(external_id_t.c.customer_id).where(
                        external_id_t.c.id_type == t, external_id_t.c.value == v
                    )
                )
            ).scalar()
            if owner is not None and owner != cid:
                raise Conflict(f"{t} {v!r} already belongs to customer {owner}")

    async def _insert_contact_points(
        self,
        conn: AsyncConnection,
        cid: int,
        phones: Sequence[tuple[str, str, str, str]],
        emails: Sequence[str],
        ext: Sequence[tuple[str, str]],
        *,
        start: int,
    ) -> None:
        if phones:
            await conn.execute(
                insert(phone_t),
                [
                    {
                        "customer_id": cid,
                        "e164": e,
                        "raw": raw,
                        "kind": kind,
                        "extension": x,
                        "position": start + i,
                    }
                    for i, (e, raw, kind, x) in enumerate(phones)
                ],
            )
        if emails:
            await conn.execute(
                insert(email_t),
                [
                    {"customer_id": cid, "email": e, "position": start + i}
                    for i, e in enumerate(emails)
                ],
            )
        if ext:
            await conn.execute(
                insert(external_id_t),
                [{"customer_id": cid, "id_type": t, "value": v} for t, v in ext],
            )

    async def _write_custom(
        self,
        conn: AsyncConnection,
        cid: int,
        defs: Mapping[str, FieldDef],
        values: Mapping[str, Any],
    ) -> None:
        for name, typed in values.items():
            d = defs[name]
            await conn.execute(
                delete(custom_value_t).where(
                    custom_value_t.c.customer_id == cid, custom_value_t.c.field_id == d.id
                )
            )
            if typed is not None:
                await conn.execute(
                    insert(custom_value_t),
                    {"customer_id": cid, "field_id": d.id, **to_columns(d, typed)},
                )

    async def update_fields(
        self, customer_id: str, fields: Mapping[str, Any], *, actor: str
    ) -> CustomerCard:
        cid = _pk(customer_id, "customer")
        std_in = {k: v for k, v in fields.items() if k in _STD_FIELDS}
        custom_in = {k: v for k, v in fields.items() if k not in _STD_FIELDS}
        std = self._clean_std(std_in)
        async with self._tx() as conn:
            before_row = await self._require_customer(conn, cid)
            defs = await self._field_defs(conn)
            custom = coerce_all(defs, custom_in)  # unknown names are refused here
            old_custom = await self._custom_values(conn, cid, defs)
            b_std, a_std = diff(
                dict(before_row), {k: v for k, v in std.items() if k not in _DERIVED}
            )
            b_cus, a_cus = diff(old_custom, custom)
            if a_std:
                await conn.execute(
                    update(_C)
                    .where(_C.c.id == cid)
                    .values(
                        **{k: std[k] for k in a_std},
                        **({k: std[k] for k in _DERIVED} if "name" in a_std else {}),
                        updated_at=utcnow(),
                    )
                )
            if a_cus:
                await self._write_custom(conn, cid, defs, {k: custom[k] for k in a_cus})
                if not a_std:
                    await conn.execute(update(_C).where(_C.c.id == cid).values(updated_at=utcnow()))
            if a_std or a_cus:
                await audit(
                    conn,
                    actor=actor,
                    entity="customer",
                    entity_id=cid,
                    action="update",
                    before={**b_std, **({"custom": b_cus} if b_cus else {})},
                    after={**a_std, **({"custom": a_cus} if a_cus else {})},
                )
            row = await self._require_customer(conn, cid)
            return await conn.run_sync(self._card_sa, row)

    async def _custom_values(
        self, conn: AsyncConnection, cid: int, defs: Mapping[str, FieldDef]
    ) -> dict[str, Any]:
        by_id = {d.id: d for d in defs.values()}
        out: dict[str, Any] = {}
        for r in (await conn.execute(_Q_CUSTOM.stmt, {"c": cid})).mappings():
            d = by_id.get(r["field_id"])
            if d is not None:
                out[d.name] = r[column_for(d.type)]
        return out

    async def add_contact_points(
        self,
        customer_id: str,
        *,
        actor: str,
        phones: Sequence[NewPhone | str] = (),
        emails: Sequence[str] = (),
        external_ids: Mapping[str, str] | None = None,
    ) -> CustomerCard:
        """Add numbers, addresses and ids to an existing customer (duplicates ignored)."""
        cid = _pk(customer_id, "customer")
        ph = self._clean_phones(phones)
        em = self._clean_emails(emails)
        ext = self._clean_external_ids(external_ids or {})
        async with self._tx() as conn:
            await self._require_customer(conn, cid)
            have_ph = {
                (r.e164, r.extension)
                for r in (await conn.execute(_Q_PHONES.stmt, {"c": cid})).all()
            }
            have_em = {r.email for r in (await conn.execute(_Q_EMAILS.stmt, {"c": cid})).all()}
            have_ext = {
                (r.id_type, r.value) for r in (await conn.execute(_Q_EXTIDS.stmt, {"c": cid})).all()
            }
            ph = [p for p in ph if (p[0], p[3]) not in have_ph]
            em = [e for e in em if e not in have_em]
            ext = [x for x in ext if x not in have_ext]
            await self._check_ext_free(conn, ext, cid)
            start = len(have_ph) + len(have_em)
            await self._insert_contact_points(conn, cid, ph, em, ext, start=start)
            if ph or em or ext:
                await audit(
                    conn,
                    actor=actor,
                    entity="customer",
                    entity_id=cid,
                    action="add_contact",
                    after={
                        "phones": [p[0] for p in ph],
                        "emails": em,
                        "external_ids": dict(ext),
                    },
                )
            row = await self._require_customer(conn, cid)
            return await conn.run_sync(self._card_sa, row)

    # ------------------------------------------------------------------ custom fields

    async def custom_fields(self) -> list[FieldDef]:
        async with self._engine.connect() as conn:
            self._invalidate_defs()
            return list((await self._field_defs(conn)).values())

    async def define_custom_field(
        self,
        name: str,
        type_: str,
        *,
        actor: str,
        label: str = "",
        choices: Sequence[str] = (),
        required: bool = False,
    ) -> FieldDef:
        async with self._tx() as conn:
            count = (await conn.execute(select(func.count()).select_from(custom_field_t))).scalar()
            clean = validate_definition(
                name, type_, label=label, choices=choices, existing=int(count or 0)
            )
            exists = (
                await conn.execute(select(custom_field_t.c.id).where(custom_field_t.c.name == name))
            ).scalar()
            if exists is not None:
                raise Conflict(f"custom field {name!r} already exists")
            fid = (
                await conn.execute(
                    insert(custom_field_t).returning(custom_field_t.c.id),
                    {
                        "name": name,
                        "label": label,
                        "type": type_,
                        "choices": list(clean),
                        "required": required,
                        "position": int(count or 0),
                    },
                )
            ).scalar_one()
            d = FieldDef(
                id=fid,
                name=name,
                type=type_,
                label=label,
                choices=clean,
                required=required,
                position=int(count or 0),
            )
            await audit(
                conn,
                actor=actor,
                entity="custom_field",
                entity_id=fid,
                action="create",
                after=d.to_dict(),
            )
        self._invalidate_defs()
        return d

    async def update_custom_field(
        self,
        name: str,
        *,
        actor: str,
        label: str | None = None,
        choices: Sequence[str] | None = None,
        required: bool | None = None,
    ) -> FieldDef:
        """Change a definition's label, choices or required flag (never its type: values
        already stored would lose their meaning). Removing a choice that customers still
        carry is refused, naming how many do."""
        async with self._tx() as conn:
            row = (
                (await conn.execute(select(custom_field_t).where(custom_field_t.c.name == name)))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound("custom field", name)
            new_label = row["label"] if label is None else label
            new_choices = tuple(row["choices"] or ()) if choices is None else tuple(choices)
            clean = validate_definition(name, row["type"], label=new_label, choices=new_choices)
            if choices is not None and row["type"] == "choice":
                dropped = set(row["choices"] or ()) - set(clean)
                if dropped:
                    used = (
                        await conn.execute(
                            select(func.count())
                            .select_from(custom_value_t)
                            .where(
                                custom_value_t.c.field_id == row["id"],
                                custom_value_t.c.value_text.in_(sorted(dropped)),
                            )
                        )
                    ).scalar_one()
                    if used:
                        raise ValidationFailed(
                            f"custom field {name!r}",
                            f"{used} customers still carry {', '.join(sorted(dropped))}",
                        )
            new_required = bool(row["required"]) if required is None else required
            before = {
                "label": row["label"],
                "choices": list(row["choices"] or ()),
                "required": bool(row["required"]),
            }
            after = {"label": new_label, "choices": list(clean), "required": new_required}
            b, a = diff(before, after)
            if a:
                await conn.execute(
                    update(custom_field_t)
                    .where(custom_field_t.c.id == row["id"])
                    .values(label=new_label, choices=list(clean), required=new_required)
                )
                await audit(
                    conn,
                    actor=actor,
                    entity="custom_field",
                    entity_id=row["id"],
                    action="update",
                    before=b,
                    after=a,
                )
        self._invalidate_defs()
        return FieldDef(
            id=row["id"],
            name=name,
            type=row["type"],
            label=new_label,
            choices=clean,
            required=new_required,
            position=row["position"],
        )

    async def delete_custom_field(self, name: str, *, actor: str) -> None:
        async with self._tx() as conn:
            row = (
                (await conn.execute(select(custom_field_t).where(custom_field_t.c.name == name)))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound("custom field", name)
            await conn.execute(delete(custom_value_t).where(custom_value_t.c.field_id == row["id"]))
            await conn.execute(delete(custom_field_t).where(custom_field_t.c.id == row["id"]))
            await audit(
                conn,
                actor=actor,
                entity="custom_field",
                entity_id=row["id"],
                action="delete",
                before={"name": name, "type": row["type"]},
            )
        self._invalidate_defs()

    # ------------------------------------------------------------------ interactions

    def _clean_record(self, rec: InteractionRecord) -> dict[str, Any]:
        if rec.direction not in INTERACTION_DIRECTIONS:
            raise ValidationFailed(
                "direction", f"must be one of {', '.join(INTERACTION_DIRECTIONS)}"
            )
        if rec.channel not in INTERACTION_CHANNELS:
            raise ValidationFailed("channel", f"must be one of {', '.join(INTERACTION_CHANNELS)}")
        number = _text("number", rec.number, LIMITS["phone_raw"])
        if number and not is_withheld(number):
            number = self._normalize_lookup_number(number) or number
        return {
            "call_id": _text("call_id", rec.call_id, LIMITS["call_id"], required=True),
            "leg": _text("leg", rec.leg, LIMITS["leg"]),
            "direction": rec.direction,
            "channel": rec.channel,
            "number": number,
            "did": _text("did", rec.did, LIMITS["phone_raw"]),
            "offered_at": _aware("offered_at", rec.offered_at),
            "answered_at": _aware("answered_at", rec.answered_at),
            "ended_at": _aware("ended_at", rec.ended_at),
            "queue": _text("queue", rec.queue, LIMITS["queue"]),
            "agent": _text("agent", rec.agent, LIMITS["agent"]),
            "campaign": _text("campaign", rec.campaign, LIMITS["campaign"]),
            "outcome": _text("outcome", rec.outcome, LIMITS["outcome"]),
            "notes": _text("notes", rec.notes, LIMITS["notes"]),
            "disposition": _text("disposition", rec.disposition, LIMITS["disposition"]),
            "customer_id": None if rec.customer_id is None else _pk(rec.customer_id, "customer"),
        }

    async def record_interaction(self, rec: InteractionRecord) -> str:
        return (await self.record_interactions((rec,)))[0]

    async def record_interactions(self, recs: Sequence[InteractionRecord]) -> list[str]:
        """Record several legs in ONE transaction; the ids come back in the order given.

        Why: the screen-pop router writes every answered leg, and the database's round trips
        run on the event loop that delivers pops. Here a batch costs a fixed handful of
        set-based statements (customers IN, existing legs IN, one multi-row insert, one audit
        insert, updates only where something changed), not four per leg. The rows and audit
        entries are those of :meth:`record_interaction` called for each record in order (a
        leg recorded twice in one batch is inserted, then updated). All or nothing: a record
        that fails validation or names an unknown customer fails the batch, nothing written.
        """
        if not recs:
            return []
        cleaned: list[tuple[dict[str, Any], str]] = []
        for rec in recs:
            vals = self._clean_record(rec)
            if vals["offered_at"] is None:
                raise ValidationFailed("offered_at", "is required")
            cleaned.append((vals, rec.agent or "system"))
        for attempt in (1, 2):
            try:
                return await self._record_many(cleaned)
            except IntegrityError:
                # a concurrent writer recorded one of the legs first: take the update path
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _record_many(self, cleaned: Sequence[tuple[dict[str, Any], str]]) -> list[str]:
        # A SQLite file: the whole transaction on the writer thread, in plain sqlite3 (see
        # crm_bridge/sqlite_writer.py). Running SQLAlchemy there instead measured worse for
        # pops: that thread then runs much Python holding the GIL.
        if self._writer is not None and self._raw_tables is not None:
            tables = self._raw_tables
            try:
                return await self._writer.transaction(
                    lambda conn: _record_many_sync(_RawLegOps(conn, tables), cleaned)
                )
            except sqlite3.IntegrityError as e:
                raise IntegrityError("record interactions", None, e) from e
        async with self._tx() as conn:
            return await conn.run_sync(lambda c: _record_many_sync(_SaLegOps(c), cleaned))

    async def interaction(self, interaction_id: str) -> InteractionView:
        iid = _pk(interaction_id, "interaction")
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(interaction_t).where(interaction_t.c.id == iid)))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound("interaction", str(iid))
            return (await self._with_cases(conn, [row]))[0]

    async def interactions_for_call(self, call_id: str) -> list[InteractionView]:
        """Every leg of a call in order, e.g. to show who handled it before a transfer."""
        async with self._engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(interaction_t)
                        .where(interaction_t.c.call_id == call_id)
                        .order_by(interaction_t.c.offered_at, interaction_t.c.id)
                    )
                )
                .mappings()
                .all()
            )
            return await self._with_cases(conn, rows)

    async def update_interaction(
        self,
        interaction_id: str,
        *,
        actor: str,
        notes: str | None = None,
        disposition: str | None = None,
        customer_id: str | None = None,
        case_ids: Sequence[str] = (),
        new_case: NewCase | None = None,
    ) -> InteractionView:
        iid = _pk(interaction_id, "interaction")
        notes_v = None if notes is None else _text("notes", notes, LIMITS["notes"])
        disp_v = (
            None
            if disposition is None
            else _text("disposition", disposition, LIMITS["disposition"], required=True)
        )
        cust_v = None if customer_id is None else _pk(customer_id, "customer")
        case_v = [_pk(c, "case") for c in case_ids]
        nc = None if new_case is None else self._clean_case(new_case)
        async with self._tx() as conn:
            old = (
                (await conn.execute(select(interaction_t).where(interaction_t.c.id == iid)))
                .mappings()
                .first()
            )
            if old is None:
                raise NotFound("interaction", str(iid))
            if cust_v is not None:
                await self._require_customer(conn, cust_v)
            if disp_v is not None:
                allowed = await self._allowed_codes(conn, old["queue"], old["campaign"])
                if allowed is not None and disp_v not in allowed:
                    shown = ", ".join(sorted(allowed)[:20])
                    raise ValidationFailed(
                        "disposition", f"{disp_v!r} is not in the configured list ({shown})"
                    )
            for c in case_v:
                if (
                    await conn.execute(select(case_t.c.id).where(case_t.c.id == c))
                ).first() is None:
                    raise NotFound("case", str(c))
            changes: dict[str, Any] = {}
            if notes_v is not None and notes_v != old["notes"]:
                changes["notes"] = notes_v
            if disp_v is not None and disp_v != old["disposition"]:
                changes["disposition"] = disp_v
            if cust_v is not None and cust_v != old["customer_id"]:
                changes["customer_id"] = cust_v
            if changes:
                await _update_audited(
                    conn, interaction_t, "interaction", iid, old, changes, actor, stamp=True
                )
            linked = set(
                (
                    await conn.execute(
                        select(case_interaction_t.c.case_id).where(
                            case_interaction_t.c.interaction_id == iid
                        )
                    )
                ).scalars()
            )
            if nc is not None:
                owner_cust = cust_v if cust_v is not None else old["customer_id"]
                existing = await self._same_new_case(conn, linked, nc, actor)
                if existing is None:
                    new_id = await self._insert_case(conn, nc, owner_cust, actor)
                    case_v.append(new_id)
                else:
                    case_v.append(existing)
            for c in dict.fromkeys(case_v):
                if c in linked:
                    continue
                await conn.execute(
                    insert(case_interaction_t),
                    {
                        "case_id": c,
                        "interaction_id": iid,
                        "linked_by": actor,
                        "linked_at": utcnow(),
                    },
                )
                linked.add(c)
                await audit(
                    conn,
                    actor=actor,
                    entity="case",
                    entity_id=c,
                    action="link_interaction",
                    after={"interaction_id": iid},
                )
            row = (
                (await conn.execute(select(interaction_t).where(interaction_t.c.id == iid)))
                .mappings()
                .one()
            )
            return (await self._with_cases(conn, [row]))[0]

    async def _same_new_case(
        self, conn: AsyncConnection, linked: set[int], nc: dict[str, str], actor: str
    ) -> int | None:
        """A resubmitted wrap-up must not open the same case twice."""
        if not linked:
            return None
        rows = (await conn.execute(select(case_t).where(case_t.c.id.in_(linked)))).mappings().all()
        for r in rows:
            if r["created_by"] == actor and all(r[k] == v for k, v in nc.items()):
                return int(r["id"])
        return None

    # ------------------------------------------------------------------ cases

    @staticmethod
    def _clean_case(nc: NewCase) -> dict[str, str]:
        return {
            "type": _text("case.type", nc.type, LIMITS["taxonomy"], required=True),
            "category": _text("case.category", nc.category, LIMITS["taxonomy"]),
            "subcategory": _text("case.subcategory", nc.subcategory, LIMITS["taxonomy"]),
            "subject": _text("case.subject", nc.subject, LIMITS["subject"]),
            "owner": _text("case.owner", nc.owner, LIMITS["owner"]),
        }

    async def _insert_case(
        self, conn: AsyncConnection, nc: Mapping[str, str], customer: int | None, actor: str
    ) -> int:
        cid = (
            await conn.execute(
                insert(case_t).returning(case_t.c.id),
                {
                    **nc,
                    "customer_id": customer,
                    "status": "open",
                    "created_by": actor,
                    "opened_at": utcnow(),
                },
            )
        ).scalar_one()
        await audit(
            conn,
            actor=actor,
            entity="case",
            entity_id=cid,
            action="create",
            after={**nc, "customer_id": customer},
        )
        return int(cid)

    async def create_case(
        self,
        data: NewCase,
        *,
        actor: str,
        customer_id: str | None = None,
        interaction_ids: Sequence[str] = (),
    ) -> CaseView:
        nc = self._clean_case(data)
        cust = None if customer_id is None else _pk(customer_id, "customer")
        iids = [_pk(i, "interaction") for i in interaction_ids]
        async with self._tx() as conn:
            if cust is not None:
                await self._require_customer(conn, cust)
            for i in iids:
                q = select(interaction_t.c.id).where(interaction_t.c.id == i)
                if (await conn.execute(q)).first() is None:
                    raise NotFound("interaction", str(i))
            case_id = await self._insert_case(conn, nc, cust, actor)
            for i in dict.fromkeys(iids):
                await conn.execute(
                    insert(case_interaction_t),
                    {
                        "case_id": case_id,
                        "interaction_id": i,
                        "linked_by": actor,
                        "linked_at": utcnow(),
                    },
                )
            row = (await conn.execute(select(case_t).where(case_t.c.id == case_id))).mappings()
            return _case_view(row.one())

    async def update_case(
        self, case_id: str, *, actor: str, status: str | None = None, owner: str | None = None
    ) -> CaseView:
        cid = _pk(case_id, "case")
        if status is not None and status not in CASE_STATUSES:
            raise ValidationFailed("status", f"must be one of {', '.join(CASE_STATUSES)}")
        owner_v = None if owner is None else _text("owner", owner, LIMITS["owner"])
        async with self._tx() as conn:
            old = (await conn.execute(select(case_t).where(case_t.c.id == cid))).mappings().first()
            if old is None:
                raise NotFound("case", str(cid))
            changes: dict[str, Any] = {}
            if status is not None and status != old["status"]:
                changes["status"] = status
                changes["closed_at"] = utcnow() if status == "closed" else None
            if owner_v is not None and owner_v != old["owner"]:
                changes["owner"] = owner_v
            if changes:
                await _update_audited(conn, case_t, "case", cid, old, changes, actor, stamp=False)
            row = (await conn.execute(select(case_t).where(case_t.c.id == cid))).mappings().one()
            return _case_view(row)

    async def case_history(self, case_id: str) -> tuple[CaseView, list[InteractionView]]:
        """A case with the interactions that touched it, oldest first."""
        cid = _pk(case_id, "case")
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(case_t).where(case_t.c.id == cid))).mappings().first()
            if row is None:
                raise NotFound("case", str(cid))
            rows = (
                (
                    await conn.execute(
                        select(interaction_t)
                        .join(
                            case_interaction_t,
                            case_interaction_t.c.interaction_id == interaction_t.c.id,
                        )
                        .where(case_interaction_t.c.case_id == cid)
                        .order_by(interaction_t.c.offered_at, interaction_t.c.id)
                    )
                )
                .mappings()
                .all()
            )
            return _case_view(row), await self._with_cases(conn, rows)

    # ------------------------------------------------------------------ notes

    async def add_note(
        self,
        body: str,
        *,
        actor: str,
        customer_id: str | None = None,
        case_id: str | None = None,
        interaction_id: str | None = None,
    ) -> str:
        text = _text("note", body, LIMITS["notes"], required=True)
        cust = None if customer_id is None else _pk(customer_id, "customer")
        case = None if case_id is None else _pk(case_id, "case")
        inter = None if interaction_id is None else _pk(interaction_id, "interaction")
        if cust is None and case is None and inter is None:
            raise ValidationFailed("note", "needs a customer, a case or an interaction")
        async with self._tx() as conn:
            if cust is not None:
                await self._require_customer(conn, cust)
            if case is not None:
                q = select(case_t.c.id).where(case_t.c.id == case)
                if (await conn.execute(q)).first() is None:
                    raise NotFound("case", str(case))
            if inter is not None:
                q = select(interaction_t.c.id).where(interaction_t.c.id == inter)
                if (await conn.execute(q)).first() is None:
                    raise NotFound("interaction", str(inter))
            nid = (
                await conn.execute(
                    insert(note_t).returning(note_t.c.id),
                    {
                        "customer_id": cust,
                        "case_id": case,
                        "interaction_id": inter,
                        "author": actor,
                        "body": text,
                        "created_at": utcnow(),
                    },
                )
            ).scalar_one()
            await audit(
                conn,
                actor=actor,
                entity="note",
                entity_id=nid,
                action="create",
                after={"customer_id": cust, "case_id": case, "interaction_id": inter, "body": text},
            )
            return str(nid)

    # ------------------------------------------------------------------ dispositions

    async def _allowed_codes(
        self, conn: AsyncConnection, queue: str, campaign: str
    ) -> set[str] | None:
        views = await self._dispositions(conn, queue, campaign)
        if views is None:
            return None
        return {v.code for v in views}

    async def _dispositions(
        self, conn: AsyncConnection, queue: str, campaign: str
    ) -> list[DispositionView] | None:
        """The most specific configured list (campaign, else queue, else global); None when
        no list applies to this queue/campaign (then any code is accepted)."""
        rows = (
            (
                await conn.execute(
                    select(disposition_t)
                    .where(
                        disposition_t.c.active.is_(True),
                        or_(
                            disposition_t.c.scope_kind == "",
                            and_(
                                disposition_t.c.scope_kind == "queue",
                                disposition_t.c.scope == queue,
                            ),
                            and_(
                                disposition_t.c.scope_kind == "campaign",
                                disposition_t.c.scope == campaign,
                            ),
                        ),
                    )
                    .order_by(disposition_t.c.position, disposition_t.c.id)
                )
            )
            .mappings()
            .all()
        )
        for kind, name in (("campaign", campaign), ("queue", queue), ("", "")):
            if kind and not name:
                continue
            sel = [r for r in rows if r["scope_kind"] == kind and r["scope"] == name]
            if sel:
                return [
                    DispositionView(
                        code=r["code"],
                        label=r["label"],
                        scope_kind=kind,
                        scope=name,
                        effect=r["effect"],
                    )
                    for r in sel
                ]
        return None

    async def dispositions(self, *, queue: str = "", campaign: str = "") -> list[DispositionView]:
        async with self._engine.connect() as conn:
            return await self._dispositions(conn, queue, campaign) or []

    async def set_dispositions(
        self,
        codes: Sequence[str | tuple[str, str] | tuple[str, str, str]],
        *,
        actor: str,
        scope_kind: str = "",
        scope: str = "",
    ) -> list[DispositionView]:
        """Replace the list for one scope: codes, (code, label) or (code, label, effect)."""
        if scope_kind not in ("", "queue", "campaign"):
            raise ValidationFailed("scope_kind", "must be '', 'queue' or 'campaign'")
        if bool(scope_kind) != bool(scope):
            raise ValidationFailed("scope", "a queue/campaign scope needs a name (and only then)")
        scope = _text("scope", scope, LIMITS["campaign"])
        items: list[tuple[str, str, str]] = []
        for i, c in enumerate(codes):
            t = (c, "", "") if isinstance(c, str) else (*tuple(c), "", "")[:3]
            code = _text(f"codes[{i}]", t[0], LIMITS["disposition"], required=True)
            label = _text(f"codes[{i}].label", t[1], LIMITS["field_label"])
            effect = _text(f"codes[{i}].effect", t[2], 32)
            if code in [x[0] for x in items]:
                raise ValidationFailed(f"codes[{i}]", f"{code!r} is listed twice")
            items.append((code, label, effect))
        async with self._tx() as conn:
            old = (
                (
                    await conn.execute(
                        select(disposition_t.c.code).where(
                            disposition_t.c.scope_kind == scope_kind, disposition_t.c.scope == scope
                        )
                    )
                )
                .scalars()
                .all()
            )
            await conn.execute(
                delete(disposition_t).where(
                    disposition_t.c.scope_kind == scope_kind, disposition_t.c.scope == scope
                )
            )
            if items:
                await conn.execute(
                    insert(disposition_t),
                    [
                        {
                            "code": c,
                            "label": lab,
                            "effect": eff,
                            "scope_kind": scope_kind,
                            "scope": scope,
                            "position": i,
                            "active": True,
                        }
                        for i, (c, lab, eff) in enumerate(items)
                    ],
                )
            await audit(
                conn,
                actor=actor,
                entity="disposition",
                entity_id=f"{scope_kind}:{scope}",
                action="replace",
                before={"codes": list(old)},
                after={"codes": [c for c, _, _ in items]},
            )
        return [DispositionView(c, lab, scope_kind, scope, eff) for c, lab, eff in items]

    # ------------------------------------------------------------------ callbacks

    async def schedule_callback(
        self,
        *,
        number: str,
        due_at: datetime,
        actor: str,
        time_zone: str | None = None,
        agent: str | None = None,
        customer_id: str | None = None,
        interaction_id: str | None = None,
        campaign: str = "",
        note: str = "",
    ) -> CallbackView:
        e164, _ext = self._parse_number(
            _text("number", number, LIMITS["phone_raw"], required=True), "number"
        )
        due = _aware("due_at", due_at)
        assert due is not None
        agent_v = None if agent is None else _text("agent", agent, LIMITS["agent"]) or None
        cust = None if customer_id is None else _pk(customer_id, "customer")
        inter = None if interaction_id is None else _pk(interaction_id, "interaction")
        tz = _check_zone("time_zone", _text("time_zone", time_zone, LIMITS["time_zone"]))
        camp = _text("campaign", campaign, LIMITS["campaign"])
        note_v = _text("note", note, LIMITS["notes"])
        async with self._tx() as conn:
            if cust is not None:
                crow = await self._require_customer(conn, cust)
                tz = tz or crow["time_zone"]
            if inter is not None:
                q = select(interaction_t.c.id).where(interaction_t.c.id == inter)
                if (await conn.execute(q)).first() is None:
                    raise NotFound("interaction", str(inter))
            tz = tz or timezone_for_number(e164) or "UTC"
            now = utcnow()
            vals = {
                "number": e164,
                "due_at": due,
                "time_zone": tz,
                "agent": agent_v,
                "customer_id": cust,
                "interaction_id": inter,
                "campaign": camp,
                "note": note_v,
                "state": "scheduled",
                "created_by": actor,
                "created_at": now,
                "updated_at": now,
            }
            cb = (
                await conn.execute(insert(callback_t).returning(callback_t.c.id), vals)
            ).scalar_one()
            await audit(
                conn,
                actor=actor,
                entity="callback",
                entity_id=cb,
                action="create",
                after={k: v for k, v in vals.items() if k not in ("created_at", "updated_at")},
            )
            row = (await conn.execute(select(callback_t).where(callback_t.c.id == cb))).mappings()
            return _callback_view(row.one())

    async def due_callbacks(self, now: datetime, limit: int = 100) -> list[CallbackView]:
        """Scheduled callbacks whose time has come, oldest first."""
        async with self._engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(callback_t)
                        .where(callback_t.c.state == "scheduled", callback_t.c.due_at <= now)
                        .order_by(callback_t.c.due_at, callback_t.c.id)
                        .limit(limit)
                    )
                )
                .mappings()
                .all()
            )
            return [_callback_view(r) for r in rows]

    async def callbacks(
        self, *, agent: str | None = None, states: Sequence[str] = ("scheduled",), limit: int = 200
    ) -> list[CallbackView]:
        q = select(callback_t).where(callback_t.c.state.in_(list(states)))
        if agent is not None:
            q = q.where(or_(callback_t.c.agent == agent, callback_t.c.agent.is_(None)))
        q = q.order_by(callback_t.c.due_at, callback_t.c.id).limit(limit)
        async with self._engine.connect() as conn:
            return [_callback_view(r) for r in (await conn.execute(q)).mappings().all()]

    async def set_callback_state(
        self, callback_id: str, state: str, *, actor: str, agent: str | None = None
    ) -> CallbackView:
        """Move a callback on (offered, done, missed, cancelled); ``agent`` reassigns it."""
        cb = _pk(callback_id, "callback")
        if state not in CALLBACK_STATES:
            raise ValidationFailed("state", f"must be one of {', '.join(CALLBACK_STATES)}")
        async with self._tx() as conn:
            old = (
                (await conn.execute(select(callback_t).where(callback_t.c.id == cb)))
                .mappings()
                .first()
            )
            if old is None:
                raise NotFound("callback", str(cb))
            changes: dict[str, Any] = {}
            if old["state"] != state:
                changes["state"] = state
            if agent is not None and (agent or None) != old["agent"]:
                changes["agent"] = agent or None
            if changes:
                await _update_audited(
                    conn, callback_t, "callback", cb, old, changes, actor, stamp=True
                )
            row = (await conn.execute(select(callback_t).where(callback_t.c.id == cb))).mappings()
            return _callback_view(row.one())

    # ------------------------------------------------------------------ consent & DNC

    async def record_consent(
        self,
        customer_id: str,
        *,
        channel: str,
        purpose: str,
        granted: bool,
        source: str,
        actor: str,
        at: datetime | None = None,
    ) -> ConsentView:
        cid = _pk(customer_id, "customer")
        if channel not in INTERACTION_CHANNELS:
            raise ValidationFailed("channel", f"must be one of {', '.join(INTERACTION_CHANNELS)}")
        purpose_v = _text("purpose", purpose, LIMITS["purpose"], required=True).lower()
        source_v = _text("source", source, LIMITS["source"], required=True)
        if not isinstance(granted, bool):
            raise ValidationFailed("granted", "expected true or false")
        when = _aware("at", at) or utcnow()
        async with self._tx() as conn:
            await self._require_customer(conn, cid)
            vals = {
                "customer_id": cid,
                "channel": channel,
                "purpose": purpose_v,
                "granted": granted,
                "source": source_v,
                "at": when,
                "recorded_by": actor,
            }
            cons = (
                await conn.execute(insert(consent_t).returning(consent_t.c.id), vals)
            ).scalar_one()
            await audit(
                conn,
                actor=actor,
                entity="consent",
                entity_id=cons,
                action="opt_in" if granted else "opt_out",
                after=vals,
            )
        return ConsentView(channel, purpose_v, granted, source_v, when)

    async def add_dnc(
        self,
        number: str,
        *,
        actor: str,
        reason: str = "",
        source: str = "",
        expires_at: datetime | None = None,
    ) -> str:
        e164, _ = self._parse_number(
            _text("number", number, LIMITS["phone_raw"], required=True), "number"
        )
        vals = {
            "reason": _text("reason", reason, LIMITS["source"]),
            "source": _text("source", source, LIMITS["source"]),
            "expires_at": _aware("expires_at", expires_at),
            "added_by": actor,
            "added_at": utcnow(),
        }
        async with self._tx() as conn:
            old = (await conn.execute(select(dnc_t).where(dnc_t.c.e164 == e164))).mappings().first()
            if old is None:
                await conn.execute(insert(dnc_t), {"e164": e164, **vals})
            else:
                await conn.execute(update(dnc_t).where(dnc_t.c.e164 == e164).values(**vals))
            await audit(
                conn,
                actor=actor,
                entity="dnc",
                entity_id=e164,
                action="add",
                before=None if old is None else dict(old),
                after={"e164": e164, **vals},
            )
        return e164

    async def remove_dnc(self, number: str, *, actor: str) -> bool:
        e164, _ = self._parse_number(
            _text("number", number, LIMITS["phone_raw"], required=True), "number"
        )
        async with self._tx() as conn:
            old = (await conn.execute(select(dnc_t).where(dnc_t.c.e164 == e164))).mappings().first()
            if old is None:
                return False
            await conn.execute(delete(dnc_t).where(dnc_t.c.e164 == e164))
            await audit(
                conn,
                actor=actor,
                entity="dnc",
                entity_id=e164,
                action="remove",
                before=dict(old),
            )
        return True

    async def may_contact(
        self, number_e164: str, purpose: str, channel: str = "phone"
    ) -> tuple[bool, str]:
        """(allowed, reason). Order: DNC list, any opt-out by a customer on this number,
        then an opt-in where the purpose requires one. Unusable numbers are refused."""
        number = self._normalize_lookup_number(number_e164 or "")
        if number is None:
            return False, f"invalid number {number_e164!r}"
        purpose_l = (purpose or "").strip().lower()
        now = utcnow()
        owners = select(phone_t.c.customer_id).where(phone_t.c.e164 == number)
        q_consent = (
            select(consent_t.c.customer_id, consent_t.c.granted, consent_t.c.source, consent_t.c.at)
            .where(
                consent_t.c.customer_id.in_(owners),
                consent_t.c.channel == channel,
                consent_t.c.purpose == purpose_l,
            )
            .order_by(consent_t.c.at.desc(), consent_t.c.id.desc())
        )
        q_dnc = select(dnc_t.c.reason, dnc_t.c.expires_at).where(dnc_t.c.e164 == number)

        def read(conn: Connection) -> tuple[Any, list[Any]]:
            return conn.execute(q_dnc).first(), list(conn.execute(q_consent).all())

        dnc, rows = await self._read(read)
        if dnc is not None and (dnc.expires_at is None or dnc.expires_at > now):
            why = f" ({dnc.reason})" if dnc.reason else ""
            return False, f"{number} is on the do-not-call list{why}"
        latest: dict[int, Any] = {}
        for r in rows:
            latest.setdefault(r.customer_id, r)
        for cid, r in sorted(latest.items()):
            if not r.granted:
                return False, (
                    f"customer {cid} opted out of {purpose_l} by {channel} on "
                    f"{r.at.date().isoformat()} ({r.source})"
                )
        required = {p.lower() for p in self._settings.consent_required_purposes}
        if purpose_l in required:
            if any(r.granted for r in latest.values()):
                return True, f"opt-in for {purpose_l} on record"
            return False, f"no opt-in for {purpose_l} by {channel} on record for {number}"
        return True, "not on the do-not-call list and no opt-out"

    # ------------------------------------------------------------------ audit

    async def audit_log(
        self, *, entity: str | None = None, entity_id: str | None = None, limit: int = 100
    ) -> list[AuditView]:
        async with self._engine.connect() as conn:
            return await read_audit(conn, entity=entity, entity_id=entity_id, limit=limit)
