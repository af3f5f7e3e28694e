"""A range of CSV rows validated column by column: the SQLite bulk loader's parser.

Why a second parser next to :class:`crm_bridge.csvio.RowParser`: ``RowParser.parse`` takes
one row at a time, ~20 µs of Python for a 22-column row, which made it the largest single
cost of a bulk import (measured with ``bench/crm_lookup.py``). Most of that work is the same
for every cell of a column: strip, a length limit, a look-up of a value from a small set
(kind, country, time zone, a choice, a date). Done once per column with ``map``, ``zip`` and
``set``, which loop in C, and with each distinct value checked once, it costs a fraction of
that. What is per value anyway (a phone number's normalization, an e-mail check) calls the
same functions as ``RowParser``.

The verdict per row stays ``RowParser``'s: every check here is the same predicate on the
same text, and a row that fails one is handed to ``RowParser.parse``, whose ``RowError`` is
the reject reason. A test holds the two parsers equal over generated files that contain
every kind of bad value the row parser refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress, repeat
from operator import add, is_not
from typing import Any

from crm_bridge.batchrules import CUSTOMER_DEFAULTS, name_columns
from crm_bridge.csvio import (
    BAD_TEXT,
    CHECKED_COLUMNS,
    MAX_ID_LEN,
    MAX_PHONE_LEN,
    MEMO_MAX,
    PHONE_KINDS,
    RowError,
    RowParser,
    check_customer_values,
    convert_custom,
)
from crm_bridge.normalize import InvalidEmail, InvalidNumber, normalize_email

_DEFAULT_CHECKED = tuple(CUSTOMER_DEFAULTS[c] for c in CHECKED_COLUMNS)
#: a custom field cell the field's rules refuse
_REFUSED: Any = object()


@dataclass(slots=True)
class PhoneColumn:
    """One phone column of the valid rows; ``e164[r]`` is None where the row stores no number
    from this column (empty, or the same number as an earlier column of the row)."""

    e164: list[str | None]
    extension: list[str]
    raw: list[str]
    kind: list[str]  #: as stored: "other" when not given
    position: list[int]  #: among the row's stored numbers


@dataclass(slots=True)
class EmailColumn:
    address: list[str | None]  #: None: empty, or the row's earlier address
    position: list[int]


@dataclass(slots=True)
class Columns:
    """The valid rows of a range, column by column (row ``r`` is index ``r`` everywhere), and
    the rejected ones."""

    lines: list[int]
    #: every column of CUSTOMER_DEFAULTS, checked and with defaults filled in
    customer: dict[str, list[Any]]
    phones: list[PhoneColumn]
    emails: list[EmailColumn]
    ids: list[tuple[str, list[str]]]  #: (id type, values; "" = none)
    custom: list[tuple[str, str, list[Any]]]  #: (field, type, values; None = not set)
    #: (first line, last line, fields, reason) of each refused row, in file order
    rejects: list[tuple[int, int, list[str], RowError]]

    def __len__(self) -> int:
        return len(self.lines)

    def _key_columns(self) -> list[tuple[str, list[Any]]]:
        """In the order RowParser lists a row's keys: numbers, addresses, identifiers."""
        return [
            *(("phone", pc.e164) for pc in self.phones),
            *(("email", ec.address) for ec in self.emails),
            *self.ids,
        ]

    def has_duplicate_keys(self) -> bool:
        """Whether two keys of the range (number, address, identifier) are equal: the usual
        answer, no, is found without building the rows' key lists."""
        seen: set[tuple[str, Any]] = set()
        total = 0
        for typ, col in self._key_columns():
            values = [v for v in col if v]
            total += len(values)
            seen.update(zip(repeat(typ), values, strict=False))
        return len(seen) != total

    def keyed(self) -> list[tuple[int, str, list[tuple[str, str]]]]:
        """(line, name, keys) per row: what :func:`crm_bridge.batchrules.dedupe` takes."""
        cols = self._key_columns()
        names = self.customer["name"]
        return [
            (line, names[r], [(typ, col[r]) for typ, col in cols if col[r]])
            for r, line in enumerate(self.lines)
        ]


class ColumnParser:
    """Validates whole ranges of one file's rows; see the module docstring."""

    def __init__(self, parser: RowParser) -> None:
        self.rows = parser
        #: (kind, vip, country, language, time zone) as given -> as stored, or None: refused
        self._checked: dict[tuple[str, ...], tuple[Any, ...] | None] = {}
        #: per custom field: cell text -> value as stored (None = not set) or _REFUSED
        self._custom: dict[str, dict[str, Any]] = {name: {} for name, *_ in parser.custom_cols}
        self._limits = {c: limit for c, _, limit in parser.customer_cols if c in CHECKED_COLUMNS}

    def parse(
        self, lines: list[int], end_lines: list[int], rows: list[list[str]], clean: bool = False
    ) -> Columns:
        """The range's records (first line, last line, fields per record). ``clean``: the
        caller found no control character and no bad UTF-8 in the text of the rows."""
        p = self.rows
        n = len(rows)
        width = p.width
        bad: set[int] = set()
        table = rows
        if set(map(len, rows)) - {width}:
            filler = [""] * width
            table = list(rows)
            for k, row in enumerate(rows):
                if len(row) != width:
                    bad.add(k)
                    table[k] = filler
        cols: list[tuple[str, ...]] = list(zip(*table, strict=True)) if n else [()] * width
        for col in () if clean else cols:
            # the pattern has no line break in it, so one search tells for the whole column
            if BAD_TEXT.search("\n".join(col)):
                bad.update(k for k, cell in enumerate(col) if BAD_TEXT.search(cell))
        strip = str.strip

        given: dict[str, list[str]] = {}
        for name, i, limit in p.customer_cols:
            values = list(map(strip, cols[i]))
            # the checked columns' lengths are checked per distinct value (_check)
            if name not in self._limits and max(map(len, values), default=0) > limit:
                bad.update(k for k, v in enumerate(values) if len(v) > limit)
            given[name] = values
        if "" in given["name"]:
            bad.update(k for k, v in enumerate(given["name"]) if not v)
        customer: dict[str, list[Any]] = {
            c: given.get(c) or [default] * n for c, default in CUSTOMER_DEFAULTS.items()
        }
        if p.checks_customer:
            self._check(given, customer, bad, n)

        phones = self._phones(cols, bad, n)
        emails = self._emails(cols, bad, n)
        ids = self._ids(cols, bad)
        custom = self._custom_values(cols, bad)

        rejects: list[tuple[int, int, list[str], RowError]] = []
        for k in sorted(bad):
            try:
                p.parse(lines[k], rows[k])
            except RowError as e:
                rejects.append((lines[k], end_lines[k], rows[k], e))
                continue
            raise RuntimeError(
                f"line {lines[k]}: the column parser refused a row the row parser accepts"
            )
        if bad:
            keep = [k not in bad for k in range(n)]

            def kept(col: list[Any]) -> list[Any]:
                return list(compress(col, keep))

            lines = kept(lines)
            customer = {c: kept(v) for c, v in customer.items()}
            phones = [
                PhoneColumn(
                    kept(pc.e164),
                    kept(pc.extension),
                    kept(pc.raw),
                    kept(pc.kind),
                    kept(pc.position),
                )
                for pc in phones
            ]
            emails = [EmailColumn(kept(ec.address), kept(ec.position)) for ec in emails]
            ids = [(typ, kept(v)) for typ, v in ids]
            custom = [(name, t, kept(v)) for name, t, v in custom]
        customer["name_key"], customer["name_rkey"] = name_columns(customer["name"])
        return Columns(lines, customer, phones, emails, ids, custom, rejects)

    def _ids(self, cols: list[tuple[str, ...]], bad: set[int]) -> list[tuple[str, list[str]]]:
        out: list[tuple[str, list[str]]] = []
        for typ, i in self.rows.layout.ids:
            values = list(map(str.strip, cols[i]))
            if max(map(len, values), default=0) > MAX_ID_LEN:
                bad.update(k for k, v in enumerate(values) if len(v) > MAX_ID_LEN)
            out.append((typ, values))
        return out

    def _custom_values(
        self, cols: list[tuple[str, ...]], bad: set[int]
    ) -> list[tuple[str, str, list[Any]]]:
        """Each distinct cell text of a field is converted once (and remembered)."""
        out: list[tuple[str, str, list[Any]]] = []
        for name, i, fd, _ in self.rows.custom_cols:
            col = cols[i]
            known = self._custom[name]
            if len(known) > MEMO_MAX:
                known.clear()
            for text in set(col).difference(known):
                known[text] = _custom_value(fd, text)
            values = list(map(known.__getitem__, col))
            if _REFUSED in values:
                bad.update(k for k, v in enumerate(values) if v is _REFUSED)
            out.append((name, fd.type, values))
        return out

    def _check(
        self, given: dict[str, list[str]], customer: dict[str, list[Any]], bad: set[int], n: int
    ) -> None:
        """kind, vip, country, language and time zone: each distinct combination once."""
        blank = [""] * n
        keys = list(zip(*(given.get(c, blank) for c in CHECKED_COLUMNS), strict=True))
        memo = self._checked
        if len(memo) > MEMO_MAX:
            memo.clear()
        limits = [self._limits.get(c, 0) for c in CHECKED_COLUMNS]
        for key in set(keys).difference(memo):
            if any(len(v) > limit for v, limit in zip(key, limits, strict=True)):
                memo[key] = None
                continue
            try:
                checked = check_customer_values(*(v or None for v in key))
            except RowError:
                memo[key] = None
                continue
            memo[key] = tuple(
                d if v is None else v for v, d in zip(checked, _DEFAULT_CHECKED, strict=True)
            )
        out = list(map(memo.__getitem__, keys))
        if None in out:
            bad.update(k for k, v in enumerate(out) if v is None)
            out = [_DEFAULT_CHECKED if v is None else v for v in out]
        if out:
            for c, values in zip(CHECKED_COLUMNS, zip(*out, strict=True), strict=True):
                customer[c] = list(values)

    def _phones(self, cols: list[tuple[str, ...]], bad: set[int], n: int) -> list[PhoneColumn]:
        normalize = self.rows.phone
        e164_form = normalize.valid_e164
        strip, lower = str.strip, str.lower
        stored = [0] * n  # numbers stored per row so far
        out: list[PhoneColumn] = []
        for pi, ki, _ in self.rows.phone_cols:
            raws = list(map(strip, cols[pi]))
            kinds = list(map(lower, map(strip, cols[ki]))) if ki >= 0 else [""] * n
            odd = set(kinds).difference(PHONE_KINDS, ("",))
            if odd:
                bad.update(k for k, kind in enumerate(kinds) if kind in odd)
            if ki >= 0 and (False, True) in set(
                zip(map(bool, raws), map(bool, kinds), strict=True)
            ):
                bad.update(k for k, raw in enumerate(raws) if not raw and kinds[k])
            if max(map(len, raws), default=0) > MAX_PHONE_LEN:
                bad.update(k for k, raw in enumerate(raws) if len(raw) > MAX_PHONE_LEN)
            # numbers already in E.164 are checked by one pattern, the others one by one
            e164: list[str | None] = (
                [
                    raw if m is not None else None
                    for raw, m in zip(raws, map(e164_form.match, raws), strict=True)
                ]
                if e164_form is not None
                else [None] * n
            )
            ext = [""] * n
            for k in [k for k, raw in enumerate(raws) if raw and e164[k] is None]:
                try:
                    e164[k], ext[k] = normalize(raws[k])
                except InvalidNumber:
                    bad.add(k)
            for earlier in out:  # a number the row already has is stored once
                e164 = [None if e == x else e for e, x in zip(e164, earlier.e164, strict=True)]
            position = stored
            stored = list(map(add, stored, map(is_not, e164, repeat(None))))
            out.append(PhoneColumn(e164, ext, raws, [k or "other" for k in kinds], position))
        return out

    def _emails(self, cols: list[tuple[str, ...]], bad: set[int], n: int) -> list[EmailColumn]:
        stored = [0] * n
        out: list[EmailColumn] = []
        for ei, _ in self.rows.email_cols:
            address: list[str | None] = [None] * n
            position = [0] * n
            for k, raw in enumerate(map(str.strip, cols[ei])):
                if not raw:
                    continue
                try:
                    addr = normalize_email(raw)
                except InvalidEmail:
                    bad.add(k)
                    continue
                if any(ec.address[k] == addr for ec in out):
                    continue
                address[k], position[k] = addr, stored[k]
                stored[k] += 1
            out.append(EmailColumn(address, position))
        return out


def _custom_value(fd: Any, text: str) -> Any:
    """A custom field cell as stored (dates as ISO text), None when not set, or _REFUSED."""
    if (text == "" or text.isspace()) and not fd.required:
        return None
    try:
        value = convert_custom(fd, text)
    except ValueError:
        return _REFUSED
    if value is not None and fd.type == "date":
        return value.isoformat()
    return value
