"""`cti crm export`: every customer as CSV in the import layout (:mod:`crm_bridge.csvio`).

Streaming: customers are read in id order a page at a time (keyset pagination, never
OFFSET) and each page's numbers, e-mails, ids and custom values with one range query per
table, so memory stays flat however big the store is and the database does no sorting of
the whole table. The header is sized from the data (as many phone/e-mail columns as the
fullest customer has) and carries the custom field definitions, so that importing the file
into an empty store recreates the same customers.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm_bridge.csvio import CUSTOMER_COLUMNS, STANDARD_ID_TYPES, csv_writer, export_header
from crm_bridge.csvio import format_custom as _format_custom
from crm_bridge.customfields import FieldDef, column_for
from crm_bridge.importer import load_field_defs
from crm_bridge.models import Customer, CustomFieldValue, Email, ExternalId, Phone
from crm_bridge.progress import Progress

_VIP = list(CUSTOMER_COLUMNS).index("vip")


@dataclass(slots=True)
class ExportResult:
    customers: int = 0
    seconds: float = 0.0


async def _max_per_customer(conn: AsyncConnection, table: Any) -> int:
    sub = select(func.count().label("n")).select_from(table).group_by(table.customer_id).subquery()
    return int((await conn.execute(select(func.max(sub.c.n)))).scalar() or 0)


async def _id_types(conn: AsyncConnection) -> list[str]:
    types = set((await conn.execute(select(ExternalId.id_type).distinct())).scalars().all())
    std = [t for t in STANDARD_ID_TYPES if t in types]
    return std + sorted(types - set(STANDARD_ID_TYPES))


def _phone_text(e164: str, ext: str) -> str:
    return f"{e164} x{ext}" if ext else e164


async def export_csv(
    engine: AsyncEngine, out: IO[str], *, page: int = 5000, progress: bool | None = None
) -> ExportResult:
    """Write all customers to ``out`` (a text stream opened with newline="")."""
    t0 = time.perf_counter()
    res = ExportResult()
    async with engine.connect() as conn:
        total = int((await conn.execute(select(func.count()).select_from(Customer))).scalar() or 0)
        n_phones = await _max_per_customer(conn, Phone)
        n_emails = await _max_per_customer(conn, Email)
        id_types = await _id_types(conn)
        loaded = await load_field_defs(conn)
        defs = [d for _, d in loaded.values()]
        by_id: dict[int, FieldDef] = {fid: d for fid, d in loaded.values()}
        header = export_header(n_phones, n_emails, id_types, defs)
        w = csv_writer(out)
        w.writerow(header)
        n_phone_cols = max(n_phones, 1)
        n_email_cols = max(n_emails, 1)
        id_pos = {t: i for i, t in enumerate(id_types)}
        field_pos = {d.name: i for i, d in enumerate(defs)}
        cust_cols = [getattr(Customer, c) for c in CUSTOMER_COLUMNS]
        bar = Progress(total, label="export", unit="customers", enabled=progress, stream=sys.stderr)
        last = 0
        try:
            while True:
                rows = (
                    await conn.execute(
                        select(Customer.id, *cust_cols)
                        .where(Customer.id > last)
                        .order_by(Customer.id)
                        .limit(page)
                    )
                ).all()
                if not rows:
                    break
                lo, hi = rows[0][0], rows[-1][0]
                last = hi
                phones: dict[int, list[str]] = defaultdict(list)
                for cid, e164, ext, kind in await conn.execute(
                    select(Phone.customer_id, Phone.e164, Phone.extension, Phone.kind)
                    .where(Phone.customer_id.between(lo, hi))
                    .order_by(Phone.customer_id, Phone.position, Phone.id)
                ):
                    phones[cid] += [_phone_text(e164, ext or ""), kind or ""]
                emails: dict[int, list[str]] = defaultdict(list)
                for cid, email in await conn.execute(
                    select(Email.customer_id, Email.email)
                    .where(Email.customer_id.between(lo, hi))
                    .order_by(Email.customer_id, Email.position, Email.id)
                ):
                    emails[cid].append(email)
                ids: dict[int, list[str]] = {}
                for cid, typ, value in await conn.execute(
                    select(ExternalId.customer_id, ExternalId.id_type, ExternalId.value).where(
                        ExternalId.customer_id.between(lo, hi)
                    )
                ):
                    cells = ids.get(cid)
                    if cells is None:
                        cells = ids[cid] = [""] * len(id_types)
                    cells[id_pos[typ]] = value
                custom: dict[int, list[str]] = {}
                if defs:
                    for cv in await conn.execute(
                        select(
                            CustomFieldValue.customer_id,
                            CustomFieldValue.field_id,
                            CustomFieldValue.value_text,
                            CustomFieldValue.value_number,
                            CustomFieldValue.value_date,
                            CustomFieldValue.value_bool,
                        ).where(CustomFieldValue.customer_id.between(lo, hi))
                    ):
                        fd = by_id.get(cv.field_id)
                        if fd is None:
                            continue
                        cells = custom.get(cv.customer_id)
                        if cells is None:
                            cells = custom[cv.customer_id] = [""] * len(defs)
                        value = getattr(cv, column_for(fd.type))
                        cells[field_pos[fd.name]] = _format_custom(fd, value)
                empty_ids = [""] * len(id_types)
                empty_custom = [""] * len(defs)
                out_rows = []
                for r in rows:
                    cid = r[0]
                    cells = ["" if v is None else v for v in r[1:]]
                    cells[_VIP] = "true" if r.vip else "false"
                    ph = phones.get(cid, [])
                    ph += [""] * (2 * n_phone_cols - len(ph))
                    em = emails.get(cid, [])
                    em += [""] * (n_email_cols - len(em))
                    out_rows.append(
                        cells + ph + em + ids.get(cid, empty_ids) + custom.get(cid, empty_custom)
                    )
                w.writerows(out_rows)
                res.customers += len(rows)
                bar.update(res.customers)
        finally:
            bar.close()
    res.seconds = time.perf_counter() - t0
    return res
