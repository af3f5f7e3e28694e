"""What every import path does the same way: the name's search keys, the duplicate check
within a batch, reject reasons, and values in the form SQLite stores them.

Shared by the portable import (:mod:`crm_bridge.importer`), the SQLite bulk loader
(:mod:`crm_bridge.bulkload`) and the demo data generator (:mod:`crm_bridge.seed`).
"""

from __future__ import annotations

import datetime as dt
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
