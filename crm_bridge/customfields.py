"""Administrator-defined typed fields every customer carries, and their validation.

Validation happens in Python before anything is written, so a wrong type is reported as
"custom field 'x': ..." rather than as a database error, and a batch with one bad value
writes nothing. The same rules serve the agent API, the store and the CSV importer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from crm_bridge.adapter import ValidationFailed
from crm_bridge.limits import CUSTOM_FIELD_TYPES, LIMITS, MAX_CUSTOM_FIELDS

__all__ = [
    "CUSTOM_FIELD_TYPES",
    "MAX_CUSTOM_FIELDS",
    "FieldDef",
    "coerce_value",
    "column_for",
    "from_columns",
    "to_columns",
    "validate_definition",
]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TRUE = frozenset({"true", "yes", "y", "1", "on", "ja", "wahr", "x"})
_FALSE = frozenset({"false", "no", "n", "0", "off", "nein", "falsch", ""})
MAX_CHOICES = 200


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    type: str
    label: str = ""
    choices: tuple[str, ...] = ()
    required: bool = False
    position: int = 0
    id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "label": self.label or self.name,
            "choices": list(self.choices),
            "required": self.required,
            "position": self.position,
        }


def validate_definition(
    name: str, type_: str, *, label: str = "", choices: Sequence[str] = (), existing: int = 0
) -> tuple[str, ...]:
    """Check a new field definition; returns the cleaned choices."""
    field = f"custom field {name!r}"
    if not NAME_RE.match(name or ""):
        raise ValidationFailed(
            field, "name must start with a-z and contain only a-z, 0-9 and _ (max 64)"
        )
    if type_ not in CUSTOM_FIELD_TYPES:
        raise ValidationFailed(
            field, f"unknown type {type_!r} (one of {', '.join(CUSTOM_FIELD_TYPES)})"
        )
    if len(label) > LIMITS["field_label"]:
        raise ValidationFailed(field, f"label longer than {LIMITS['field_label']} characters")
    if existing >= MAX_CUSTOM_FIELDS:
        raise ValidationFailed(field, f"at most {MAX_CUSTOM_FIELDS} custom fields can be defined")
    cleaned = tuple(str(c).strip() for c in choices)
    if type_ == "choice":
        if not cleaned or any(not c for c in cleaned):
            raise ValidationFailed(field, "a choice field needs a list of non-empty choices")
        if len(set(cleaned)) != len(cleaned):
            raise ValidationFailed(field, "choices must be distinct")
        if len(cleaned) > MAX_CHOICES or any(len(c) > LIMITS["text_value"] for c in cleaned):
            raise ValidationFailed(field, f"at most {MAX_CHOICES} choices of reasonable length")
    elif cleaned:
        raise ValidationFailed(field, f"choices only make sense for a choice field, not {type_}")
    return cleaned


def coerce_value(defn: FieldDef, value: Any) -> str | float | date | bool | None:
    """The typed value for ``defn`` or ValidationFailed naming the field; None = unset.

    Text input (CSV, forms) is accepted in the obvious spellings: numbers with a decimal
    point or comma, ISO dates, true/false/yes/no/1/0.
    """
    field = f"custom field {defn.name!r}"
    if value is None or (isinstance(value, str) and not value.strip()):
        if defn.required:
            raise ValidationFailed(field, "a value is required")
        return None
    t = defn.type
    if t == "text":
        if not isinstance(value, str):
            raise ValidationFailed(field, f"expected text, got {type(value).__name__}")
        if len(value) > LIMITS["text_value"]:
            raise ValidationFailed(
                field, f"text longer than {LIMITS['text_value']} characters ({len(value)})"
            )
        return value
    if t == "number":
        if isinstance(value, bool):
            raise ValidationFailed(field, "expected a number, got true/false")
        if isinstance(value, int | float):
            num = float(value)
        elif isinstance(value, str):
            text = value.strip().replace(" ", "")
            if text.count(",") == 1 and "." not in text:
                text = text.replace(",", ".")
            try:
                num = float(text)
            except ValueError:
                raise ValidationFailed(field, f"expected a number, got {value!r}") from None
        else:
            raise ValidationFailed(field, f"expected a number, got {type(value).__name__}")
        if not math.isfinite(num):
            raise ValidationFailed(field, f"expected a finite number, got {value!r}")
        return num
    if t == "date":
        if isinstance(value, datetime):
            raise ValidationFailed(field, "expected a date without time")
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                raise ValidationFailed(
                    field, f"expected a date as YYYY-MM-DD, got {value!r}"
                ) from None
        raise ValidationFailed(field, f"expected a date, got {type(value).__name__}")
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        raise ValidationFailed(field, f"expected true or false, got {value!r}")
    if t == "choice":
        if not isinstance(value, str):
            raise ValidationFailed(field, f"expected one of the choices, got {value!r}")
        if value not in defn.choices:
            shown = ", ".join(defn.choices[:10])
            raise ValidationFailed(field, f"{value!r} is not one of the choices ({shown})")
        return value
    raise ValidationFailed(field, f"has unknown type {t!r}")


def column_for(type_: str) -> str:
    """Which value column of crm_custom_value holds a field of this type."""
    return {
        "text": "value_text",
        "choice": "value_text",
        "number": "value_number",
        "date": "value_date",
        "bool": "value_bool",
    }[type_]


def to_columns(defn: FieldDef, typed: str | float | date | bool | None) -> dict[str, Any]:
    cols: dict[str, Any] = {
        "value_text": None,
        "value_number": None,
        "value_date": None,
        "value_bool": None,
    }
    cols[column_for(defn.type)] = typed
    return cols


def from_columns(defn: FieldDef, row: Mapping[str, Any]) -> Any:
    return row[column_for(defn.type)]


def coerce_all(
    defs: Mapping[str, FieldDef], values: Mapping[str, Any]
) -> dict[str, str | float | date | bool | None]:
    """Validate a whole set of values first (all or nothing)."""
    out: dict[str, str | float | date | bool | None] = {}
    for name, value in values.items():
        defn = defs.get(name)
        if defn is None:
            known = ", ".join(sorted(defs)) or "none defined"
            raise ValidationFailed(f"custom field {name!r}", f"is not defined (known: {known})")
        out[name] = coerce_value(defn, value)
    return out
