"""What every import path does the same way: the name's search keys, the duplicate check
within a batch, reject reasons, and values in the form SQLite stores them.

Shared by the portable import (:mod:`crm_bridge.importer`), the SQLite bulk loader
(:mod:`crm_bridge.bulkload`) and the demo data generator (:mod:`crm_bridge.seed`).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from itertools import repeat
from typing import Any

from crm_bridge.csvio import RowError
from crm_bridge.limits import LIMITS
from crm_bridge.normalize import search_key


def sqlite_datetime(v: dt.datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DateTime stores (naive UTC, always with microseconds)."""
    if v is None:
        return None
    return v.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


#: the customer columns derived from the name that the bulk writers fill themselves (a test
#: holds them equal to the model's columns with a default computed from the name)
NAME_COLUMNS = ("name_key", "name_rkey")

#: the customer columns the importers write, with what is stored for a cell left empty
CUSTOMER_DEFAULTS: dict[str, Any] = {
    "kind": "person", "name": "", "name_key": "", "name_rkey": "", "street": "",
    "postcode": "", "city": "", "country": "", "segment": "", "vip": False, "language": "",
    "time_zone": "",
}  # fmt: skip


#: search key per word (bounded): names repeat their words, and the key of a name is the
#: keys of its words joined (case folding and decomposition never cross a space)
_WORD_KEYS: dict[str, str] = {}


def name_values(name: str) -> tuple[str, ...]:
    """Values for :data:`NAME_COLUMNS`, by the store's own rules (normalize.search_key...).

    The key is built word by word from a memo; the "last name first" key is
    normalize.search_key_last_first's rule applied to it. A property test holds both equal
    to the store's functions.
    """
    memo = _WORD_KEYS
    keys = []
    for word in name.split():
        k = memo.get(word)
        if k is None:
            k = search_key(word)
            if len(memo) < 100_000:
                memo[word] = k
        if k:
            keys.append(k)
    key = " ".join(keys)
    words = key.split(" ")
    rkey = " ".join([words[-1], *words[:-1]]) if len(words) > 1 else words[0]
    return (key[: LIMITS["name"]], rkey[: LIMITS["name"]])


#: between the names of a column joined into one text: a control character (no name that
#: gets this far has one) that no rule below changes or treats as white space
_SEP = "\x00"
_SPACES = re.compile(r"\s+")
_EDGE_SPACES = re.compile(r" ?\x00 ?")
#: characters seen so far -> whether they are combining marks (dropped from keys)
_COMBINING: dict[str, bool] = {}


def name_columns(names: list[str]) -> tuple[list[str], list[str]]:
    """:func:`name_values` of many names, as two columns: the same rules applied to all names
    at once, as one text (what each rule does to a character or a run of white space never
    reaches across the separator). A property test holds it equal to name_values.

    Why: a bulk import computes the keys of every row; a few passes over one text in C cost
    half of what a function call per name does.
    """
    if not names:
        return [], []
    text = _SEP.join(names)
    if text.count(_SEP) != len(names) - 1:  # a name with the separator in it
        pairs = [name_values(n) for n in names]
        return [k for k, _ in pairs], [r for _, r in pairs]
    folded = text.lower() if text.isascii() else unicodedata.normalize("NFKD", text.casefold())
    chars = set(folded)
    for c in chars.difference(_COMBINING):
        _COMBINING[c] = bool(unicodedata.combining(c))
    odd_space = False  # white space other than single spaces between words
    for c in chars:
        if _COMBINING[c]:
            folded = folded.replace(c, "")
        elif c != " " and c.isspace():
            odd_space = True
    if (odd_space or "  " in folded or " \x00" in folded or "\x00 " in folded
            or folded.startswith(" ") or folded.endswith(" ")):  # fmt: skip
        # one space between words, none at either end of a name
        folded = _EDGE_SPACES.sub(_SEP, _SPACES.sub(" ", folded)).strip(" ")
    keys = folded.split(_SEP)
    words = map(str.rpartition, keys, repeat(" "))
    rkeys = [f"{last} {rest}" if gap else last for rest, gap, last in words]
    limit = LIMITS["name"]
    if max(map(len, keys), default=0) > limit or max(map(len, rkeys), default=0) > limit:
        keys = [k[:limit] for k in keys]
        rkeys = [k[:limit] for k in rkeys]
    return keys, rkeys


def _printable(s: str) -> str:
    return "".join(ch if ch.isprintable() and not ("\ud800" <= ch <= "\udfff") else "?" for ch in s)


def reject_row(line: int, end_line: int, name: str, e: RowError) -> list[Any]:
    """The reject report's row (line, reason, name) for a record the parser refused.

    A field-count error in a record spanning lines is most likely a quote that is never
    closed, and the reason says so; the name is shown cut and with unprintable characters
    replaced (the report is read in a spreadsheet).
    """
    reason = str(e)
    if end_line > line and reason.startswith("expected "):
        reason += f" (the record runs over lines {line}-{end_line}: a quote "
        reason += "that is never closed?)"
    return [line, reason, _printable(name[:60])]


def dedupe(
    keyed: list[tuple[int, str, list[tuple[str, str]]]],
    found: dict[tuple[str, str], int],
    merges: list[list[Any]],
) -> set[int]:
    """Indexes (in ``keyed``) of the rows not to import: they become merge suggestions
    (one line per matching key)."""
    in_batch: dict[tuple[str, str], int] = {}  # key -> line of the earlier row
    dropped: set[int] = set()
    for i, (row_line, name, keys) in enumerate(keyed):
        hits: list[list[Any]] = []
        for key in keys:
            cid = found.get(key)
            if cid is not None:
                hits.append([row_line, name, key[0], key[1], cid, "database"])
                continue
            line = in_batch.get(key)
            if line is not None:
                hits.append([row_line, name, key[0], key[1], "", f"line {line}"])
        if hits:
            merges.extend(hits)
            dropped.add(i)
            continue
        for key in keys:
            in_batch[key] = row_line
    return dropped
