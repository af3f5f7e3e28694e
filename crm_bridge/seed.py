"""Deterministic demo data: `cti crm seed --customers N [--seed S]`.

German names and addresses, E.164 numbers (landlines with the city's area code, mobiles),
e-mails, account/card/contract numbers, four custom fields, past interactions, a few cases,
consent records and a do-not-call list. The same (N, seed) always gives the same data, so a
benchmark or a demo script can rely on what is in the store.

Why numbers are a function of the customer index rather than drawn from the random stream:
they must be unique without a set of a million strings in memory, and the demo's PBX
simulator must be able to call numbers that exist (:func:`demo_numbers`) without generating
the whole data set. Each number's subscriber digits come from a bijection (an affine map
modulo the size of the digit space) of the index, so no two customers share one.

The generator bypasses the number parser on purpose: it only produces forms that are valid
E.164 for Germany (a test checks a sample against crm_bridge.normalize), and parsing a
million numbers would take longer than writing them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm_bridge.batchrules import NAME_COLUMNS, name_values, sqlite_datetime
from crm_bridge.csvio import csv_writer, export_header, format_custom
from crm_bridge.customfields import FieldDef
from crm_bridge.importer import bulk_insert, ensure_fields, is_sqlite
from crm_bridge.models import (
    Case,
    CaseInteraction,
    Consent,
    Customer,
    CustomFieldValue,
    DncEntry,
    Email,
    ExternalId,
    Interaction,
    Phone,
)
from crm_bridge.progress import Progress

FIRST_F = (
    "Anna Maria Ursula Monika Petra Elisabeth Sabine Renate Helga Karin Brigitte Ingrid Erika "
    "Andrea Gisela Claudia Susanne Gabriele Christa Christine Hildegard Stefanie Julia Laura "
    "Lena Lea Leonie Hannah Sophie Emma Mia Lina Marie Katharina Johanna Sarah Lisa Nina Jana "
    "Melanie Nicole Sandra Tanja Birgit Heike Anja Silke Kerstin Jessica Ayse Fatma Olga Elif"
).split()
FIRST_M = (
    "Peter Michael Thomas Andreas Wolfgang Klaus Jürgen Günter Stefan Christian Uwe Werner Horst "
    "Frank Dieter Manfred Gerhard Hans Bernd Torsten Matthias Alexander Martin Markus Jens Jan "
    "Sebastian Tobias Florian Lukas Leon Paul Felix Jonas Maximilian Elias Noah Ben Finn Luca "
    "Tim Niklas Philipp Daniel David Simon Mehmet Mustafa Ali Dariusz Piotr Sergej Dimitri"
).split()
LAST = (
    "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch "
    "Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann "
    "Lange Schmitt Werner Schmitz Krause Meier Lehmann Schmid Schulze Maier Köhler Herrmann "
    "König Walter Mayer Huber Kaiser Fuchs Peters Lang Scholz Möller Weiß Jung Hahn Schubert "
    "Vogel Friedrich Keller Günther Frank Berger Winkler Roth Beck Lorenz Baumann Franke Albrecht "
    "Schuster Simon Ludwig Böhm Winter Kraus Martin Schumacher Krämer Vogt Stein Jäger Otto "
    "Sommer Groß Seidel Heinrich Brandt Haas Schreiber Graf Schulte Dietrich Ziegler Kuhn Kühn "
    "Pohl Engel Horn Busch Bergmann Thomas Voigt Sauer Arnold Wolff Pfeiffer Yilmaz Kaya Nowak"
).split()
STREETS = (
    "Hauptstraße, Schulstraße, Gartenstraße, Bahnhofstraße, Dorfstraße, Bergstraße, Birkenweg, "
    "Lindenstraße, Kirchstraße, Waldstraße, Ringstraße, Schillerstraße, Goethestraße, "
    "Mühlenweg, Wiesenweg, Amselweg, Am Sportplatz, Jahnstraße, Poststraße, Rosenstraße, "
    "Friedhofstraße, Feldstraße, Lessingstraße, Beethovenstraße, Mozartstraße, "
    "Industriestraße, Marktplatz, Kastanienallee, Eichendorffstraße, Uhlandstraße, Parkstraße, "
    "Brunnenstraße, Blumenstraße, Frankfurter Allee, Karl-Marx-Straße, Kurfürstendamm, "
    "Sonnenallee, Hermannstraße"
).split(", ")
#: (city, first postcode, last postcode, area code without trunk 0, weight)
CITIES = (
    ("Berlin", 10115, 14199, "30", 30),
    ("Hamburg", 20095, 22769, "40", 14),
    ("München", 80331, 81929, "89", 12),
    ("Köln", 50667, 51149, "221", 8),
    ("Frankfurt am Main", 60306, 60599, "69", 6),
    ("Stuttgart", 70173, 70629, "711", 5),
    ("Düsseldorf", 40210, 40629, "211", 5),
    ("Leipzig", 4103, 4357, "341", 4),
    ("Dortmund", 44135, 44388, "231", 4),
    ("Essen", 45127, 45359, "201", 4),
    ("Bremen", 28195, 28779, "421", 3),
    ("Dresden", 1067, 1328, "351", 3),
    ("Hannover", 30159, 30659, "511", 3),
    ("Nürnberg", 90402, 90491, "911", 3),
)
MOBILE_PREFIXES = ("151", "152", "157", "159", "160", "162", "163", "170", "171", "172", "173",
                   "174", "175", "176", "177", "178", "179", "155", "156")  # fmt: skip
DOMAINS = ("webmail.example", "gmx.example", "t-online.example", "posteo.example",
           "mailbox.example", "freenet.example")  # fmt: skip
ORG_SUFFIX = ("GmbH", "GmbH & Co. KG", "AG", "KG", "e.K.", "OHG", "UG (haftungsbeschränkt)")
ORG_TRADE = ("Bau", "Elektro", "Logistik", "Immobilien", "Autohaus", "Bäckerei", "Consulting",
             "Steuerberatung", "Sanitär", "Gartenbau", "Software", "Druckerei")  # fmt: skip
QUEUES = ("support", "sales", "billing")
AGENTS = tuple(f"agent{n}" for n in range(1, 21))
OUTCOMES = (("answered", "resolved"), ("answered", "info"), ("answered", "callback"),
            ("abandoned", ""), ("answered", "complaint"), ("no-answer", ""))  # fmt: skip
CASE_TYPES = (
    ("complaint", "billing", "wrong invoice"),
    ("complaint", "delivery", "late"),
    ("request", "contract", "change tariff"),
    ("request", "contract", "cancellation"),
    ("incident", "technical", "no service"),
    ("request", "address", "change of address"),
)

FIELDS = (
    FieldDef("tariff", "choice", choices=("basic", "plus", "premium")),
    FieldDef("customer_since", "date"),
    FieldDef("newsletter", "bool"),
    FieldDef("credit_limit", "number"),
)

#: subscriber digit space: a first digit 2-9 and 7 more digits (8 digits, never 0/1 first)
_SPACE = 8 * 10**7
#: customers supported with unique numbers (second numbers use the upper half of the space)
_HALF = _SPACE // 2
_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _affine(seed: int, salt: int) -> tuple[int, int]:
    """(multiplier, offset) of a bijection on range(_SPACE) for this seed."""
    r = random.Random(seed * 7919 + salt)
    while True:
        a = r.randrange(10**6, _SPACE)
        if a % 2 and a % 5:  # coprime with 8 * 10**7 = 2**10 * 5**7
            return a, r.randrange(_SPACE)


def _sub(i: int, ab: tuple[int, int]) -> str:
    x = (ab[0] * i + ab[1]) % _SPACE
    return str(20_000_000 + x)  # 8 digits, first digit 2..9


def _mix(seed: int, i: int) -> int:
    """A cheap, well spread 32-bit hash of (seed, i) for per-customer choices."""
    x = (i * 0x9E3779B1 + seed * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    x = (x * 0x297A2D39) & 0xFFFFFFFF
    return x ^ (x >> 15)


class _Numbers:
    """Phone numbers of customer i: primary always, secondary for some (never colliding)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        # one bijection, disjoint inputs (i and i + half the space): no number twice
        self.perm = _affine(seed, 1)
        weights = [c[4] for c in CITIES]
        self._city_table = [n for n, w in enumerate(weights) for _ in range(w)]

    def city(self, i: int) -> int:
        return self._city_table[_mix(self.seed, i) % len(self._city_table)]

    def phone1(self, i: int) -> tuple[str, str]:
        h = _mix(self.seed, i)
        if (h >> 8) % 100 < 55:
            prefix = MOBILE_PREFIXES[(h >> 16) % len(MOBILE_PREFIXES)]
            return f"+49{prefix}{_sub(i, self.perm)}", "mobile"
        return f"+49{CITIES[self.city(i)][3]}{_sub(i, self.perm)}", "landline"

    def phone2(self, i: int) -> tuple[str, str] | None:
        h = _mix(self.seed + 1, i)
        if h % 100 >= 35:
            return None
        if (h >> 8) % 2:
            prefix = MOBILE_PREFIXES[(h >> 16) % len(MOBILE_PREFIXES)]
            return f"+49{prefix}{_sub(i + _HALF, self.perm)}", "mobile"
        return f"+49{CITIES[self.city(i)][3]}{_sub(i + _HALF, self.perm)}", "work"


def demo_numbers(n: int, seed: int = 1) -> list[str]:
    """E.164 numbers of the first n seeded customers (valid once `seed --customers >= n`).

    The PBX simulator calls these so that the demo's pops find a customer.
    """
    nums = _Numbers(seed)
    return [nums.phone1(i)[0] for i in range(n)]


_DOUBLE = {str(d): (2 * d - 9 if d > 4 else 2 * d) for d in range(10)}
_SINGLE = {str(d): d for d in range(10)}


def seeded_number(index: int, seed: int = 1) -> str:
    """The primary number of seeded customer ``index`` (0-based), without generating the rest."""
    return _Numbers(seed).phone1(index)[0]


def seeded_account(index: int, seed: int = 1) -> str:
    """The account number of seeded customer ``index`` (every customer has one)."""
    return f"K{_sub(index, _affine(seed, 3))}"


def _luhn(digits: str) -> str:
    """digits plus their Luhn check digit (card numbers that pass a checksum test)."""
    rev = digits[::-1]
    total = sum(_DOUBLE[c] for c in rev[0::2]) + sum(_SINGLE[c] for c in rev[1::2])
    return digits + str((10 - total % 10) % 10)


@dataclass(slots=True)
class SeedCustomer:
    """One generated customer, in the shape the CSV layout and the tables both need."""

    index: int
    customer: dict[str, Any]
    phones: list[tuple[str, str]]
    emails: list[str]
    ids: list[tuple[str, str]]
    custom: dict[str, Any]
    interactions: list[dict[str, Any]] = field(default_factory=list)
    case: tuple[str, str, str, str] | None = None
    consent: tuple[bool, str] | None = None
    dnc: bool = False


def generate(customers: int, seed: int = 1, start: int = 0) -> Iterator[SeedCustomer]:
    """Customers start .. customers-1 of the data set for ``seed`` (lazily)."""
    rnd = random.Random(seed)
    nums = _Numbers(seed)
    acc = _affine(seed, 3)
    card = _affine(seed, 4)
    con = _affine(seed, 5)
    rand = rnd.random

    def choice(seq: Any) -> Any:  # random.choice is 4x slower than this
        return seq[int(rand() * len(seq))]

    def randrange(lo: int, hi: int) -> int:
        return lo + int(rand() * (hi - lo))

    tariffs = FIELDS[0].choices
    for i in range(start, customers):
        h = _mix(seed, i)
        city, pc_lo, pc_hi, _area, _w = CITIES[nums.city(i)]
        last = choice(LAST)
        org = h % 10 == 0
        if org:
            first = ""
            name = f"{last} {choice(ORG_TRADE)} {choice(ORG_SUFFIX)}"
        else:
            first = choice(FIRST_F) if h & 0x100 else choice(FIRST_M)
            name = f"{first} {last}"
        lang = "de" if (h >> 4) % 20 else choice(("en", "tr", "pl", "ru"))
        c = {
            "name": name,
            "kind": "organisation" if org else "person",
            "street": f"{choice(STREETS)} {randrange(1, 180)}",
            "postcode": f"{randrange(pc_lo, pc_hi + 1):05d}",
            "city": city,
            "country": "DE",
            "segment": "business" if org else ("premium" if (h >> 9) % 10 == 0 else "retail"),
            "vip": (h >> 12) % 33 == 0,
            "language": lang,
            "time_zone": "Europe/Berlin",
        }
        phones = [nums.phone1(i)]
        p2 = nums.phone2(i)
        if p2:
            phones.append(p2)
        emails: list[str] = []
        if (h >> 14) % 10 < 7:
            local = f"{first or 'info'}.{last}".lower()
            local = local.translate(_ASCII)
            emails.append(f"{local}.{_b36(i)}@{DOMAINS[(h >> 18) % len(DOMAINS)]}")
        ids = [("account", f"K{_sub(i, acc)}")]
        if (h >> 20) % 10 < 4:
            ids.append(("card", _luhn("4" + _sub(i, card) + f"{(h >> 3) % 10**7:07d}")))
        if (h >> 22) % 10 < 3:
            ids.append(("contract", f"V-{2015 + (h >> 24) % 11}-{_sub(i, con)}"))
        since = dt.date(2005, 1, 1) + dt.timedelta(days=randrange(0, 7600))
        # custom fields are sparse as in real CRMs: not every customer has every value
        custom: dict[str, Any] = {"tariff": tariffs[(h >> 5) % 3], "customer_since": since}
        if (h >> 6) % 5 < 2:
            custom["newsletter"] = bool(h & 0x80)
        if c["segment"] != "retail":
            custom["credit_limit"] = float(randrange(0, 50) * 100)
        sc = SeedCustomer(i, c, phones, emails, ids, custom)
        if (h >> 25) % 10 == 0:
            for k in range(1 + (h >> 29) % 3):
                offered = _EPOCH - dt.timedelta(seconds=randrange(60, 300 * 86400))
                outcome, disp = choice(OUTCOMES)
                answered = offered + dt.timedelta(seconds=randrange(3, 60))
                inbound = rand() < 0.8
                sc.interactions.append(
                    {
                        "direction": "inbound" if inbound else "outbound",
                        "call_id": f"seed{seed}-{i}-{k}",
                        "number": phones[0][0],
                        "offered_at": offered,
                        "answered_at": answered if outcome == "answered" else None,
                        "ended_at": answered + dt.timedelta(seconds=randrange(20, 900)),
                        "queue": choice(QUEUES) if inbound else "",
                        "agent": choice(AGENTS) if outcome == "answered" else "",
                        "campaign": "" if inbound else "winback",
                        "outcome": outcome,
                        "disposition": disp,
                        "notes": "Rückruf vereinbart" if disp == "callback" else "",
                    }
                )
            if (h >> 28) % 4 == 0:
                typ, cat, sub = choice(CASE_TYPES)
                sc.case = (typ, cat, sub, "open" if rand() < 0.4 else "closed")
        if (h >> 26) % 10 < 3:
            sc.consent = ((h >> 27) % 5 != 0, "web form" if h & 0x2 else "call")
        sc.dnc = (h >> 11) % 100 == 0 and i >= 1000  # the first 1000 stay callable for demos
        yield sc


_ASCII = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", " ": "-"})


def _b36(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if not i:
            return out


# ---------------------------------------------------------------------------------------------
# writing


@dataclass(slots=True)
class SeedResult:
    customers: int = 0
    phones: int = 0
    emails: int = 0
    interactions: int = 0
    cases: int = 0
    seconds: float = 0.0


class SeedError(Exception):
    """The store is not empty (seeding twice would clash on numbers and ids)."""


_COLUMNS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "c": (Customer, ("id", "kind", "name", "street", "postcode", "city", "country", "segment",
                     "vip", "language", "time_zone", "created_at", "updated_at",
                     *NAME_COLUMNS)),
    "p": (Phone, ("customer_id", "raw", "e164", "extension", "kind", "position")),
    "e": (Email, ("customer_id", "email", "position")),
    "x": (ExternalId, ("customer_id", "id_type", "value")),
    "v": (CustomFieldValue, ("customer_id", "field_id", "value_text", "value_number",
                             "value_date", "value_bool")),
    "i": (Interaction, ("id", "customer_id", "direction", "channel", "call_id", "leg", "number",
                        "did", "offered_at", "answered_at", "ended_at", "queue", "agent",
                        "campaign", "outcome", "notes", "disposition", "created_at",
                        "updated_at")),
    "k": (Case, ("id", "customer_id", "type", "category", "subcategory", "subject", "status",
                 "owner", "opened_at", "closed_at", "created_by")),
    "ki": (CaseInteraction, ("case_id", "interaction_id", "linked_at", "linked_by")),
    "co": (Consent, ("customer_id", "channel", "purpose", "granted", "source", "at",
                     "recorded_by")),
    "d": (DncEntry, ("e164", "reason", "source", "added_at", "added_by", "expires_at")),
}  # fmt: skip


def _same(v: Any) -> Any:
    return v


def _sqlite_date(v: dt.date) -> str:
    return v.isoformat()


class _Builder:
    """Turns generated customers into per-table tuples (in a worker process or thread)."""

    def __init__(
        self, gen: Iterator[SeedCustomer], fids: dict[str, int], sqlite: bool, actor: str
    ) -> None:
        self.gen = gen
        self.fids = fids
        self.ts: Any = sqlite_datetime if sqlite else _same
        self.day: Any = _sqlite_date if sqlite else _same
        self.actor = actor
        self.next_int = 1
        self.next_case = 1
        self.now = self.ts(dt.datetime.now(dt.UTC))
        self._created: dict[dt.date, Any] = {}
        self._keys: dict[str, tuple[str, ...]] = {}

    def build(self, n: int) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
        t: dict[str, list[tuple[Any, ...]]] = {k: [] for k in _COLUMNS}
        tc, tp, te, tx, tv = t["c"], t["p"], t["e"], t["x"], t["v"]
        ts, day, actor = self.ts, self.day, self.actor
        fid_t, fid_s, fid_n, fid_l = (
            self.fids["tariff"],
            self.fids["customer_since"],
            self.fids["newsletter"],
            self.fids["credit_limit"],
        )
        count = 0
        created_cache, keys = self._created, self._keys
        for sc in itertools.islice(self.gen, n):
            count += 1
            cid = sc.index + 1
            c = sc.customer
            cu = sc.custom
            since = cu["customer_since"]
            created = created_cache.get(since)
            if created is None:
                created = ts(dt.datetime(since.year, since.month, since.day, 9, tzinfo=dt.UTC))
                created_cache[since] = created
            name = c["name"]
            nk = keys.get(name)
            if nk is None:
                nk = keys[name] = name_values(name)
            tc.append((cid, c["kind"], name, c["street"], c["postcode"], c["city"], c["country"],
                       c["segment"], c["vip"], c["language"], c["time_zone"], created, created,
                       *nk))  # fmt: skip
            for pos, (num, kind) in enumerate(sc.phones):
                tp.append((cid, num, num, "", kind, pos))
            if sc.dnc:
                t["d"].append((sc.phones[0][0], "customer request", "seed", self.now, actor, None))
            for pos, e in enumerate(sc.emails):
                te.append((cid, e, pos))
            for typ, v in sc.ids:
                tx.append((cid, typ, v))
            tv.append((cid, fid_t, cu["tariff"], None, None, None))
            tv.append((cid, fid_s, None, None, day(since), None))
            if "newsletter" in cu:
                tv.append((cid, fid_n, None, None, None, cu["newsletter"]))
            if "credit_limit" in cu:
                tv.append((cid, fid_l, None, cu["credit_limit"], None, None))
            first_int = self.next_int
            for it in sc.interactions:
                off = ts(it["offered_at"])
                t["i"].append((self.next_int, cid, it["direction"], "phone", it["call_id"], "",
                               it["number"], "", off, ts(it["answered_at"]), ts(it["ended_at"]),
                               it["queue"], it["agent"], it["campaign"], it["outcome"],
                               it["notes"], it["disposition"], off, off))  # fmt: skip
                self.next_int += 1
            if sc.case:
                typ, cat, sub, status = sc.case
                opened = sc.interactions[0]["offered_at"]
                closed = ts(opened + dt.timedelta(days=3)) if status == "closed" else None
                t["k"].append((self.next_case, cid, typ, cat, sub, f"{cat}: {sub}", status,
                               sc.interactions[0]["agent"], ts(opened), closed, actor))  # fmt: skip
                for iid in range(first_int, self.next_int):
                    t["ki"].append((self.next_case, iid, ts(opened), actor))
                self.next_case += 1
            if sc.consent:
                granted, source = sc.consent
                t["co"].append((cid, "phone", "marketing", granted, source, created, actor))
        return count, t


#: in the generating process: its builder (set by _worker_start)
_worker: dict[str, _Builder] = {}


def _worker_start(
    customers: int,
    seed: int,
    fids: dict[str, int],
    sqlite: bool,
    actor: str,
    next_int: int,
    next_case: int,
) -> None:
    b = _Builder(generate(customers, seed), fids, sqlite, actor)
    b.next_int, b.next_case = next_int, next_case
    _worker["builder"] = b


def _worker_build(n: int) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
    return _worker["builder"].build(n)


async def _secondary_indexes(conn: AsyncConnection) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the CRM tables' plain indexes on SQLite."""
    res = await conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name LIKE 'crm_%'"
    )
    rows: list[Any] = list(res.all())
    return [(r[0], r[1]) for r in rows]


async def _advance_sequences(conn: AsyncConnection) -> None:
    """PostgreSQL: move the id sequences past the ids we assigned ourselves."""
    for table in ("crm_customer", "crm_interaction", "crm_case"):
        await conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
        )


async def sqlite_foreign_keys(conn: AsyncConnection, *, on: bool) -> None:
    """Switch FK enforcement on this pooled connection (only possible outside a transaction).

    Every child row of a seed batch points at a customer id the same batch inserts, so
    SQLite's per-row parent lookups prove nothing.
    """
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


async def seed_database(
    engine: AsyncEngine,
    customers: int,
    seed: int = 1,
    *,
    batch: int = 20_000,
    progress: bool | None = None,
    actor: str = "seed",
    parallel: bool | None = None,
) -> SeedResult:
    """Write the data set into an empty store, one transaction per batch.

    On SQLite the CRM tables' non-unique indexes are dropped for the load and rebuilt from
    the sorted data at the end (several times faster than a million random index inserts);
    the next batch is generated while SQLite writes the current one, in a second (spawned)
    process from 50,000 customers on, else in a thread; SQLite's per-row foreign key lookups
    are off for each batch (all ids are the seed's own).
    """
    t0 = time.perf_counter()
    res = SeedResult()
    async with engine.begin() as conn:
        have = (await conn.execute(select(func.count()).select_from(Customer))).scalar() or 0
        if have:
            raise SeedError(f"the store already holds {have} customers; seed needs an empty one")
        defs, _ = await ensure_fields(conn, FIELDS, actor)
        fids = {n: fid for n, (fid, _) in defs.items()}
        sqlite = is_sqlite(conn)
        builder = _Builder(generate(customers, seed), fids, sqlite, actor)
        builder.next_int = (
            (await conn.execute(select(func.max(Interaction.id)))).scalar() or 0
        ) + 1
        builder.next_case = ((await conn.execute(select(func.max(Case.id)))).scalar() or 0) + 1
        dropped: list[tuple[str, str]] = []
        if sqlite and customers >= 50_000:
            dropped = await _secondary_indexes(conn)
            for name, _sql in dropped:
                await conn.exec_driver_sql(f'DROP INDEX "{name}"')
    bar = Progress(customers, label="seed", enabled=progress, stream=sys.stderr)
    pool: ProcessPoolExecutor | None = None
    build: Callable[[], Awaitable[tuple[int, dict[str, list[tuple[Any, ...]]]]]]
    if parallel is None:
        parallel = customers >= 50_000 and (os.cpu_count() or 1) > 1
    if parallel:
        # generating is ~30 % of the work: a second process does it while this one writes
        # (a thread would hold the GIL the writer needs between SQLite calls)
        pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_start,
            initargs=(customers, seed, fids, sqlite, actor, builder.next_int, builder.next_case),
        )
        loop, _pool = asyncio.get_running_loop(), pool

        def build() -> Awaitable[tuple[int, dict[str, list[tuple[Any, ...]]]]]:
            return loop.run_in_executor(_pool, _worker_build, batch)
    else:

        def build() -> Awaitable[tuple[int, dict[str, list[tuple[Any, ...]]]]]:
            return asyncio.create_task(asyncio.to_thread(builder.build, batch))

    try:
        pending = build()
        while True:
            n, t = await pending
            if not n:
                break
            pending = build()
            async with engine.connect() as conn:
                if sqlite:  # every child row points at an id this batch writes
                    await sqlite_foreign_keys(conn, on=False)
                try:
                    async with conn.begin():
                        for key, (table, cols) in _COLUMNS.items():
                            await bulk_insert(conn, table, cols, t[key])
                        if not sqlite:
                            await _advance_sequences(conn)
                finally:
                    if sqlite and not conn.closed:
                        await sqlite_foreign_keys(conn, on=True)
            res.customers += n
            res.phones += len(t["p"])
            res.emails += len(t["e"])
            res.interactions += len(t["i"])
            res.cases += len(t["k"])
            bar.update(res.customers)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        if dropped:
            async with engine.begin() as conn:
                for _name, sql in dropped:
                    await conn.exec_driver_sql(sql)
                await conn.exec_driver_sql("ANALYZE")
    res.seconds = time.perf_counter() - t0
    return res


def write_csv(out: IO[str], customers: int, seed: int = 1, *, national_share: float = 0.0) -> int:
    """The data set as an import CSV (the benchmark's input); returns the rows written.

    ``national_share`` of the numbers are written in national format (``0151 2345...``) so
    that an import exercises the full parser, not only the E.164 shortcut.
    """
    header = export_header(2, 1, ["account", "card", "contract"], FIELDS)
    w = csv_writer(out)
    w.writerow(header)
    fields = {f.name: f for f in FIELDS}
    every = int(1 / national_share) if national_share > 0 else 0
    n = 0
    for sc in generate(customers, seed):
        c = sc.customer
        vip = "true" if c["vip"] else "false"
        row = [c["name"], c["kind"], c["street"], c["postcode"], c["city"], c["country"],
               c["segment"], vip, c["language"], c["time_zone"]]  # fmt: skip
        for k in range(2):
            if k < len(sc.phones):
                num, kind = sc.phones[k]
                if every and (sc.index + k) % every == 0:
                    num = "0" + num[3:6] + " " + num[6:]
                row += [num, kind]
            else:
                row += ["", ""]
        row.append(sc.emails[0] if sc.emails else "")
        ids = dict(sc.ids)
        row += [ids.get("account", ""), ids.get("card", ""), ids.get("contract", "")]
        row += [format_custom(fields[f.name], sc.custom.get(f.name)) for f in FIELDS]
        w.writerow(row)
        n += 1
    return n
