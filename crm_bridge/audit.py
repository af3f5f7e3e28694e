"""The append-only audit log: every change to CRM data, written in the same transaction.

Writers call :func:`audit` with the open connection of their change, so a change and its
audit entry commit or vanish together. The table refuses UPDATE and DELETE (triggers
installed by the migration).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_bridge.adapter import iso
from crm_bridge.db import utcnow
from crm_bridge.models import LIMITS, audit_t

__all__ = ["AuditView", "audit", "audit_row", "diff", "read_audit"]

_T = audit_t


def _json(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {str(k): _json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json(x) for x in v]
    return v


def diff(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the keys whose values changed, as (before, after)."""
    keys = [k for k in after if before.get(k) != after[k]]
    return {k: _json(before.get(k)) for k in keys}, {k: _json(after[k]) for k in keys}


def audit_row(
    *,
    actor: str,
    entity: str,
    entity_id: str | int,
    action: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The parameters of one audit entry (for writers that insert many at once)."""
    return {
        "at": at or utcnow(),
        "actor": (actor or "system")[: LIMITS["actor"]],
        "entity": entity,
        "entity_id": str(entity_id),
        "action": action,
        "before": None if before is None else _json(before),
        "after": None if after is None else _json(after),
    }


async def audit(
    conn: AsyncConnection,
    *,
    actor: str,
    entity: str,
    entity_id: str | int,
    action: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    row = audit_row(
        actor=actor,
        entity=entity,
        entity_id=entity_id,
        action=action,
        before=before,
        after=after,
        at=at,
    )
    await conn.execute(insert(_T), row)


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    at: datetime
    actor: str
    entity: str
    entity_id: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": iso(self.at),
            "actor": self.actor,
            "entity": self.entity,
            "entity_id": self.entity_id,
            "action": self.action,
            "before": self.before,
            "after": self.after,
        }


async def read_audit(
    conn: AsyncConnection,
    *,
    entity: str | None = None,
    entity_id: str | None = None,
    limit: int = 100,
) -> list[AuditView]:
    """Newest first."""
    q = select(_T).order_by(_T.c.id.desc()).limit(limit)
    if entity is not None:
        q = q.where(_T.c.entity == entity)
    if entity_id is not None:
        q = q.where(_T.c.entity_id == str(entity_id))
    rows = (await conn.execute(q)).mappings().all()
    return [
        AuditView(
            id=r["id"],
            at=r["at"],
            actor=r["actor"],
            entity=r["entity"],
            entity_id=r["entity_id"],
            action=r["action"],
            before=r["before"],
            after=r["after"],
        )
        for r in rows
    ]
