"""The bulk loader's column-by-column parser gives the row parser's verdicts and values.

The row parser (csvio.RowParser) is the reference: the PostgreSQL import uses it, and its
rules are the store's. The column parser must refuse exactly the rows it refuses, with its
reason, and store exactly the values it parses, for files full of every kind of bad value.
"""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import pytest

from crm_bridge.batchparse import ColumnParser, Columns
from crm_bridge.batchrules import CUSTOMER_DEFAULTS, name_values
from crm_bridge.bulkload import read_records, records
from crm_bridge.csvio import ParsedRow, RowError, RowParser, parse_header
from crm_bridge.customfields import FieldDef

HEADER = (
    "name,kind,street,postcode,city,country,segment,vip,language,time_zone,"
    "phone,phone_kind,phone2,phone2_kind,email,email2,account,card,id_member,"
    "cf_tariff:choice=basic|plus,cf_since:date,cf_news:bool,cf_limit:number,cf_note"
).split(",")
#: (valid values, refused values) per column; "" is "not given"
POOLS: dict[str, tuple[list[str], list[str]]] = {
    "name": (["Anna Müller", " Jörg  Groß ", "Ölwerk GmbH", "Ñandú Co.", "a"],
             ["", "  ", "x" * 201]),
    "kind": (["", "person", "Organisation", "organization", " PERSON "], ["robot"]),
    "street": (["", "Hauptstr. 1", " Weg 2 "], ["y" * 201]),
    "postcode": (["", "10115"], ["1" * 21]),
    "city": (["", "Berlin", "München"], ["c" * 101]),
    "country": (["", "DE", "de", " at "], ["DEU", "D1"]),
    "segment": (["", "retail"], ["z" * 51]),
    "vip": (["", "true", "no", "ja", "0"], ["maybe", "truest"]),
    "language": (["", "de", "de-AT"], ["german", "x" * 36]),
    "time_zone": (["", "Europe/Berlin", "UTC"], ["Mars/Base", "Europe/" + "b" * 60]),
    "phone": (
        ["", "+4930123456", "030 1234567", "0049 30 1234567", "+4915123456789", "030/123-4567",
         "+49 30 12345678 x12", "+4930123456", "1234567", "+442079460000"],
        ["+49301", "12", "abc", "9" * 65, "+4930 0000"],
    ),
    "phone_kind": (["", "mobile", "Work", " landline"], ["pager"]),
    "email": (["", "A@Example.com", "mailto:b@example.org", "x@y.de", " c@d.de "],
              ["bad@", "a..b@example.com", ("l" * 250) + "@x.de"]),
    "account": (["", "K1", "K2", "K3"], ["k" * 65]),
    "card": (["", "C1", "C2"], ["c" * 65]),
    "id_member": (["", "M1"], []),
    "cf_tariff:choice=basic|plus": (["", "basic", "plus", " "], ["gold"]),
    "cf_since:date": (["", "2020-01-31", "1999-12-01"], ["2020-02-30", "31.01.2020"]),
    "cf_news:bool": (["", "true", "0", "yes"], ["perhaps"]),
    "cf_limit:number": (["", "12.5", "1,5", "-3", "1e3"], ["abc", "inf"]),
    "cf_note": (["hello", " spaced "], ["", " ", "t" * 1001]),  # a required field
}  # fmt: skip
POOLS["phone2"], POOLS["phone2_kind"], POOLS["email2"] = (
    POOLS["phone"],
    POOLS["phone_kind"],
    POOLS["email"],
)


def _parsers() -> tuple[RowParser, ColumnParser]:
    layout = parse_header(HEADER)
    fields = {"note": FieldDef("note", "text", required=True)}
    fields.update({n: d for n, _, d in layout.custom if d is not None})
    rows = RowParser(layout, fields, region="DE", default_area="30")
    return rows, ColumnParser(RowParser(layout, fields, region="DE", default_area="30"))


def _file(seed: int, n: int, bad_share: float) -> bytes:
    """A CSV file (header and n records): valid rows, rows with one to three refused
    values (``bad_share`` of them), control characters, bad UTF-8, short and long rows and
    the odd blank line."""
    rnd = random.Random(seed)
    out = io.StringIO(newline="")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER)
    for _ in range(n):
        row = [rnd.choice(POOLS[col][0]) for col in HEADER]
        if rnd.random() < bad_share:
            for k in rnd.sample(range(len(HEADER)), rnd.randint(1, 3)):
                bad = POOLS[HEADER[k]][1]
                if bad:
                    row[k] = rnd.choice(bad)
        r = rnd.random()
        if r < 0.01:
            row.pop()
        elif r < 0.02:
            row.append("extra")
        elif r < 0.03:
            k = rnd.randrange(len(row))
            row[k] += rnd.choice(["\x01", "\x1f", "\udcff"])
        elif r < 0.035:
            out.write("\n")
        w.writerow(row)
    return out.getvalue().encode("utf-8", "surrogateescape")


def _expected(p: ParsedRow) -> dict[str, Any]:
    """What the loader must store of a row the row parser accepted."""
    c = p.customer
    customer = {col: c.get(col, default) for col, default in CUSTOMER_DEFAULTS.items()}
    customer["name_key"], customer["name_rkey"] = name_values(c["name"])
    return {
        "customer": customer,
        "phones": [
            (e164, kind or "other", ext, raw, pos)
            for pos, (e164, kind, ext, raw) in enumerate(p.phones)
        ],
        "emails": list(enumerate(p.emails)),
        "ids": p.ids,
        "custom": {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in p.custom.items()},
        "keys": [("phone", ph[0]) for ph in p.phones] + [("email", e) for e in p.emails] + p.ids,
    }


def _stored(cols: Columns, r: int) -> dict[str, Any]:
    phones = [(pc.e164[r], pc.kind[r], pc.extension[r], pc.raw[r], pc.position[r])
              for pc in cols.phones if pc.e164[r] is not None]  # fmt: skip
    return {
        "customer": {col: values[r] for col, values in cols.customer.items()},
        "phones": sorted(phones, key=lambda ph: ph[-1]),
        "emails": sorted(
            (ec.position[r], ec.address[r]) for ec in cols.emails if ec.address[r] is not None
        ),
        "ids": [(typ, values[r]) for typ, values in cols.ids if values[r]],
        "custom": {name: values[r] for name, _, values in cols.custom if values[r] is not None},
        "keys": cols.keyed()[r][2],
    }


@pytest.mark.parametrize(("seed", "bad_share"), [(1, 0.02), (2, 0.1), (3, 0.3), (4, 0.0)])
def test_the_column_parser_refuses_and_stores_what_the_row_parser_does(
    seed: int, bad_share: float
) -> None:
    data = _file(seed, 1500, bad_share)
    head = data.index(b"\n") + 1
    body = data[head:]
    rows, columns = _parsers()

    want_rejects: dict[int, str] = {}
    want_rows: dict[int, dict[str, Any]] = {}
    for line, _, fields, error in records(body, 1):
        if error:
            continue
        try:
            want_rows[line] = _expected(rows.parse(line, fields))
        except RowError as e:
            want_rejects[line] = str(e)

    got = read_records(body, 1)
    assert got.clean == (b"\x01" not in body and b"\x1f" not in body and b"\xff" not in body)
    cols = columns.parse(got.lines, got.end_lines, got.rows, got.clean)
    assert {line: str(e) for line, _, _, e in cols.rejects} == want_rejects
    assert cols.lines == list(want_rows)
    assert [_stored(cols, r) for r in range(len(cols))] == list(want_rows.values())
    all_keys = [k for row in want_rows.values() for k in row["keys"]]
    assert cols.has_duplicate_keys() == (len(set(all_keys)) != len(all_keys))
    # the files hold accepted rows and, but for the clean one, rows refused for each reason
    assert len(want_rows) > 100
    if bad_share:
        assert len(want_rejects) > 20


def test_a_clean_range_is_parsed_alike_with_and_without_the_callers_word() -> None:
    """``clean`` only lets the parser skip a search; it must not change a verdict."""
    body = _file(5, 400, 0.1).split(b"\n", 1)[1].replace(b"\x01", b"").replace(b"\x1f", b"")
    body = body.replace(b"\xff", b"")
    got = read_records(body, 1)
    assert got.clean
    _, columns = _parsers()
    a = columns.parse(got.lines, got.end_lines, got.rows, clean=True)
    b = columns.parse(got.lines, got.end_lines, got.rows, clean=False)
    assert [(x[0], str(x[3])) for x in a.rejects] == [(x[0], str(x[3])) for x in b.rejects]
    assert [_stored(a, r) for r in range(len(a))] == [_stored(b, r) for r in range(len(b))]


def test_an_empty_range() -> None:
    _, columns = _parsers()
    cols = columns.parse([], [], [], True)
    assert len(cols) == 0 and cols.rejects == [] and not cols.has_duplicate_keys()
    assert all(v == [] for v in cols.customer.values())
