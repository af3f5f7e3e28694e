"""Lead import from CSV (`cti dialer import CAMPAIGN FILE.csv`).

Layout (UTF-8, header row, column order free): `phone` (required), `phone2`, `phone3`, ...
(rotation order), `name`, `ref` (the row's key, unique per campaign; default: the line
number), `time_zone` (IANA; default: derived from the number, else the site's zone),
`priority` (integer, higher first); every other column is kept as the lead's fields and shown
in the preview pop.

Rows are streamed in batches, each batch one transaction; a bad row is reported with its line
number and reason and the rest of the file still lands. Numbers go through the CRM bridge's
normalizer, and a lead whose number belongs to a CRM customer is linked to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.csvio import CsvSource, read_header
from crm_bridge.db import make_sessionmaker
from crm_bridge.models import Phone
from crm_bridge.normalize import InvalidNumber, normalize_phone, timezone_for_number
from crm_bridge.progress import Progress
from dialer.models import Campaign, Lead

_PHONE_COL = re.compile(r"^phone(\d*)$")
MAX_FIELD = 500


@dataclass
class LeadImportReport:
    imported: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "rejects": [{"line": ln, "reason": r} for ln, r in self.rejected[:1000]],
        }


def _layout(header: list[str]) -> tuple[list[int], dict[str, int]]:
    phones: list[tuple[int, int]] = []
    named: dict[str, int] = {}
    for i, raw in enumerate(header):
        col = raw.strip().lower()
        m = _PHONE_COL.match(col)
        if m:
            phones.append((int(m.group(1) or 1), i))
        elif col:
            if col in named:
                raise ValueError(f"column {col!r} appears twice in the header")
            named[col] = i
    if not phones:
        raise ValueError("the header has no 'phone' column")
    return [i for _, i in sorted(phones)], named


def _rows(
    f: IO[bytes], region: str, default_area: str, site_zone: str
) -> Iterator[tuple[int, dict[str, Any] | str, int]]:
    """(line, lead columns or the reason it is rejected, byte offset) per data row."""
    head: tuple[Any, ...] = tuple(read_header(f))
    header, offset, line = head[0], head[1], head[2]
    # newer readers also sniff the delimiter (comma, semicolon, tab)
    extra: dict[str, Any] = {"delimiter": head[3]} if len(head) > 3 else {}
    phone_cols, named = _layout(header)
    width = len(header)
    for rec in CsvSource(f, start_offset=offset, start_line=line, **extra):
        if rec.error:
            yield rec.line, rec.error, rec.end_offset
            continue
        cells = rec.fields
        if len(cells) != width:
            yield rec.line, f"expected {width} columns, found {len(cells)}", rec.end_offset
            continue
        if any("\udc80" <= ch <= "\udcff" for c in cells for ch in c):
            yield rec.line, "not valid UTF-8", rec.end_offset
            continue
        if any(len(c) > MAX_FIELD for c in cells):
            yield rec.line, f"a value is longer than {MAX_FIELD} characters", rec.end_offset
            continue
        numbers: list[str] = []
        bad = ""
        for i in phone_cols:
            raw = cells[i].strip()
            if not raw:
                continue
            try:
                e164 = normalize_phone(raw, region=region, default_area=default_area)
            except InvalidNumber as e:
                bad = f"{header[i]}: {e}"
                break
            if e164 not in numbers:
                numbers.append(e164)
        if bad:
            yield rec.line, bad, rec.end_offset
            continue
        if not numbers:
            yield rec.line, "no phone number", rec.end_offset
            continue

        def cell(name: str, cells: list[str] = cells) -> str:
            i = named.get(name)
            return cells[i].strip() if i is not None else ""

        zone = cell("time_zone") or timezone_for_number(numbers[0]) or site_zone
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            yield rec.line, f"time_zone: unknown zone {zone!r}", rec.end_offset
            continue
        prio_text = cell("priority") or "0"
        try:
            priority = int(prio_text)
        except ValueError:
            yield rec.line, f"priority: {prio_text!r} is not a whole number", rec.end_offset
            continue
        extra = {
            k: cells[i]
            for k, i in named.items()
            if k not in ("ref", "name", "time_zone", "priority") and cells[i] != ""
        }
        yield (
            rec.line,
            {
                "ref": cell("ref") or f"line-{rec.line}",
                "name": cell("name")[:200],
                "numbers": numbers,
                "time_zone": zone,
                "priority": priority,
                "fields": extra,
            },
            rec.end_offset,
        )


async def import_leads(
    engine: AsyncEngine,
    campaign_name: str,
    path: str | Path,
    *,
    region: str,
    default_area: str = "",
    site_zone: str = "Europe/Berlin",
    batch: int = 2000,
    progress: bool | None = None,
) -> LeadImportReport:
    """Stream `path` into the campaign's leads. Raises LookupError for an unknown campaign and
    ValueError for a file whose header is unusable; row problems go into the report."""
    sessions = make_sessionmaker(engine)
    async with sessions() as s:
        camp = (
            await s.execute(select(Campaign).where(Campaign.name == campaign_name))
        ).scalar_one_or_none()
    if camp is None:
        raise LookupError(f"no campaign named {campaign_name!r}")
    report = LeadImportReport()
    p = Path(path)
    # a CLI batch job reading a local file: blocking reads between awaits are fine here
    size = p.stat().st_size  # noqa: ASYNC240
    bar = Progress(size, label=f"leads {campaign_name}", unit="rows", enabled=progress)
    pending: list[dict[str, Any]] = []
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def flush() -> None:
        if not pending:
            return
        numbers = {n for r in pending for n in r["numbers"]}
        async with sessions() as s, s.begin():
            owners: dict[str, int | None] = {}
            rows = await s.execute(
                select(Phone.e164, Phone.customer_id).where(Phone.e164.in_(numbers))
            )
            for e164, owner in rows.all():
                owners.setdefault(e164, owner)
            values = []
            for r in pending:
                cid = next((owners[n] for n in r["numbers"] if n in owners), None)
                values.append(
                    {
                        **r,
                        "campaign_id": camp.id,
                        "customer_id": cid,
                        "state": "new",
                        "number_index": 0,
                        "attempts": 0,
                        "attempts_today": 0,
                        "attempts_day": "",
                        "outcome_counts": {},
                        "last_outcome": "",
                        "done_reason": "",
                        "claimed_by": "",
                    }
                )
            stmt = (
                insert(Lead)
                .values(values)
                .on_conflict_do_nothing(index_elements=["campaign_id", "ref"])
            )
            res: Any = await s.execute(stmt)
            count = res.rowcount
            inserted = count if count is not None and count >= 0 else len(values)
        report.imported += inserted
        report.duplicates += len(values) - inserted
        pending.clear()

    with p.open("rb") as f:  # noqa: ASYNC230
        for line, row, offset in _rows(f, region, default_area, site_zone):
            if isinstance(row, str):
                report.rejected.append((line, row))
            else:
                pending.append(row)
                if len(pending) >= batch:
                    await flush()
            bar.update(offset, report.imported + len(pending))
        await flush()
    bar.close()
    return report
