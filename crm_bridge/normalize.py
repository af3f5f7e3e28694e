"""Phone numbers and e-mail addresses in the one form the store indexes and compares.

Every number that enters the system (caller ID from the PBX, a CSV import, an agent typing
into the pop, a dialer lead) goes through :func:`normalize_phone`, so that matching is a plain
equality on an indexed column and never a fuzzy search in the call path.

Decisions (documented here because other packages rely on them):

* Result: E.164 (``+4930123456``), always with ``+`` and the country code, no extension.
* Accepted input forms: ``+4930123456``, ``004930123456`` (the region's international
  prefix), ``030123456`` (national with trunk prefix), ``+49 (0)30 123456``, and national
  digits without the trunk prefix (``30123456``, as many ISDN/SIP trunks deliver caller ID).
  Spaces, slashes, dots, dashes and parentheses are ignored.
* Dashes belong to the number: ``030 1234-56`` is the direct-dial number ``+49301234 56``
  (German "Durchwahl" notation), not an extension.
* Extensions are only recognised with an explicit marker: ``x12``, ``ext 12``, ``ext. 12``,
  ``extension 12``, ``;ext=12``, ``#12``. They are not part of the E.164 form (the line's
  number identifies the customer); :func:`parse_phone` returns them separately so the store
  can keep them.
* Default area: when a number has neither international nor trunk prefix and does not
  already start with the default area code, the area is put in front (``123456`` with area
  ``30`` -> ``+4930123456``) if that gives a valid number. Digits starting with the area code
  are read as national (``30123456`` -> ``+4930123456``), and so are digits forming a
  valid mobile or service number (``1711234567`` -> ``+491711234567``) and any valid
  national reading of 9 or more digits (``891234567`` -> ``+49891234567``: local subscriber
  numbers are shorter). Short digit strings are ambiguous by nature (``4512345`` is a
  Berlin local number or Lübeck without its 0); the rule reads them as local.
* Validity: the number must be valid for its country according to ``phonenumbers``
  metadata; otherwise :class:`InvalidNumber` (a ``ValueError``) names the input and why.
* Withheld / anonymous caller IDs (empty, ``anonymous``, ``<unknown>``, ``restricted``,
  ``private``, ``withheld``, ``unavailable``, ...) raise :class:`WithheldNumber`, a subclass
  of ``InvalidNumber``: code that only needs "a usable number or an error" catches
  ``InvalidNumber``; the call path uses :func:`caller_number`, which returns ``None`` for a
  withheld number and raises only for garbage.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import timezone as pn_timezone

__all__ = [
    "InvalidEmail",
    "InvalidNumber",
    "ParsedPhone",
    "WithheldNumber",
    "caller_number",
    "is_withheld",
    "normalize_email",
    "normalize_phone",
    "parse_phone",
    "search_key",
    "search_key_last_first",
    "timezone_for_number",
    "try_normalize_phone",
]

MAX_PHONE_INPUT = 64
MAX_EMAIL = 254


class InvalidNumber(ValueError):
    """The text is not a usable phone number; the message says which text and why."""


class WithheldNumber(InvalidNumber):
    """The caller withheld the number (or the network did not deliver one)."""


class InvalidEmail(ValueError):
    """The text is not a usable e-mail address."""


@dataclass(frozen=True, slots=True)
class ParsedPhone:
    e164: str
    extension: str = ""
    #: ISO region of the number (e.g. "DE"), "" when phonenumbers cannot tell
    region: str = ""


_WITHHELD = frozenset(
    {
        "",
        "anonymous",
        "anonym",
        "unknown",
        "<unknown>",
        "unbekannt",
        "unavailable",
        "restricted",
        "private",
        "withheld",
        "blocked",
        "no caller id",
        "nocallerid",
        "none",
        "null",
        "-",
        "asterisk",
    }
)

#: digit strings this long are national numbers without trunk prefix, not local numbers
_MIN_NATIONAL_DIGITS = 9
#: number types a subscriber number without area code may have
_LOCAL_TYPES = frozenset(
    {
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.UNKNOWN,
    }
)

_EXT_RE = re.compile(
    r"\s*(?:;\s*ext\s*=|#|\bextension\b\.?|\bext\b\.?|\bx)\s*([0-9]{1,10})\s*$",
    re.IGNORECASE,
)
_ALLOWED_RE = re.compile(r"^\+?[0-9 ()./\-\t]+$")
_SEPARATORS = str.maketrans("", "", " ()./-\t")


def is_withheld(raw: str | None) -> bool:
    """True for caller IDs that mean "no number": empty, anonymous, <unknown>, ..."""
    if raw is None:
        return True
    return raw.strip().strip('"').strip().lower() in _WITHHELD


@lru_cache(maxsize=64)
def _prefixes(region: str) -> tuple[str, str]:
    md = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if md is None:
        raise InvalidNumber(f"unknown region {region!r} (expected an ISO code like 'DE')")
    intl = md.preferred_international_prefix or md.international_prefix or ""
    if not intl.isdigit():
        intl = ""
    return (md.national_prefix or "", intl)


def _parse_valid(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        num = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return num if phonenumbers.is_valid_number(num) else None


def parse_phone(raw: str, *, region: str, default_area: str = "") -> ParsedPhone:
    """Parse ``raw`` into E.164 plus extension; raise InvalidNumber / WithheldNumber."""
    if raw is None or is_withheld(raw):
        raise WithheldNumber(f"no caller number ({raw!r} means withheld or unknown)")
    if len(raw) > MAX_PHONE_INPUT:
        raise InvalidNumber(f"phone number too long ({len(raw)} characters, max {MAX_PHONE_INPUT})")
    text = raw.strip()
    extension = ""
    m = _EXT_RE.search(text)
    if m:
        extension = m.group(1)
        text = text[: m.start()].strip()
    if not text or not _ALLOWED_RE.match(text):
        raise InvalidNumber(
            f"{raw!r} is not a phone number (only digits, a leading +, spaces, / - . ( ) "
            "and an extension marker like 'x12' are allowed)"
        )
    # "+49 (0)30 ..." : the optional trunk prefix in parentheses is not dialled
    text = text.replace("(0)", "")
    digits = text.translate(_SEPARATORS)
    if digits.startswith("+"):
        if not digits[1:].isdigit():
            raise InvalidNumber(f"{raw!r}: '+' may only appear at the start")
    elif not digits.isdigit():
        raise InvalidNumber(f"{raw!r} is not a phone number")
    if len(digits.lstrip("+")) < 3:
        raise InvalidNumber(f"{raw!r} is too short to be a phone number")

    national_prefix, intl_prefix = _prefixes(region)
    num: phonenumbers.PhoneNumber | None = None
    bare = not digits.startswith("+") and not (intl_prefix and digits.startswith(intl_prefix))
    bare = bare and not (national_prefix and digits.startswith(national_prefix))
    if bare and default_area and not digits.startswith(default_area):
        # a mobile or service number given without its trunk prefix is never a local one
        national = _parse_valid(digits, region)
        if national is not None and (
            len(digits) >= _MIN_NATIONAL_DIGITS
            or phonenumbers.number_type(national) not in _LOCAL_TYPES
        ):
            num = national
        else:
            num = _parse_valid(national_prefix + default_area + digits, region)
    if num is None:
        num = _parse_valid(digits, region)
    if num is None:
        try:
            phonenumbers.parse(digits, region)
        except phonenumbers.NumberParseException as e:
            raise InvalidNumber(f"{raw!r} is not a phone number: {e._msg}") from None
        raise InvalidNumber(f"{raw!r} is not a valid phone number for region {region}")
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    reg = phonenumbers.region_code_for_number(num) or ""
    return ParsedPhone(e164=e164, extension=extension, region=reg)


def normalize_phone(raw: str, *, region: str, default_area: str = "") -> str:
    """E.164 form of ``raw``; raises InvalidNumber (WithheldNumber for withheld)."""
    return parse_phone(raw, region=region, default_area=default_area).e164


def caller_number(raw: str | None, *, region: str, default_area: str = "") -> str | None:
    """Call-path variant: ``None`` for a withheld number, E.164 otherwise.

    Raises InvalidNumber for text that is neither (the caller decides whether to log it).
    """
    if raw is None or is_withheld(raw):
        return None
    return normalize_phone(raw, region=region, default_area=default_area)


def try_normalize_phone(raw: str | None, *, region: str, default_area: str = "") -> str | None:
    """E.164 or ``None`` for anything unusable (withheld or invalid)."""
    if raw is None:
        return None
    try:
        return normalize_phone(raw, region=region, default_area=default_area)
    except InvalidNumber:
        return None


_EMAIL_RE = re.compile(
    r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def normalize_email(raw: str) -> str:
    """Lower-cased, trimmed address; raises InvalidEmail with the reason.

    The whole address is lower-cased (not only the domain): mailbox names are case
    insensitive at every provider a contact center meets, and matching must not miss.
    """
    if raw is None:
        raise InvalidEmail("e-mail address missing")
    text = raw.strip().lower()
    if text.startswith("mailto:"):
        text = text[7:]
    if not text:
        raise InvalidEmail("e-mail address is empty")
    if len(text) > MAX_EMAIL:
        raise InvalidEmail(f"e-mail address too long ({len(text)} characters, max {MAX_EMAIL})")
    if not _EMAIL_RE.match(text) or ".." in text:
        raise InvalidEmail(f"{raw!r} is not a valid e-mail address")
    return text


def timezone_for_number(e164: str) -> str | None:
    """The IANA time zone of a number when phonenumbers knows exactly one, else None.

    Used to place a lead or callback in the called party's local time when no time zone is
    stored for the customer.
    """
    try:
        num = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    zones = [z for z in pn_timezone.time_zones_for_number(num) if z != "Etc/Unknown"]
    if len(zones) == 1:
        return zones[0]
    return None


def search_key(text: str) -> str:
    """Case- and accent-insensitive form of a name for prefix search ("Müller" -> "muller").

    Stored next to the name (``crm_customer.name_key``) so that a search is an index range
    scan on every database instead of a full scan with LIKE.
    """
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.split())


def search_key_last_first(text: str) -> str:
    """The search key with the last word first ("Anna Müller" -> "muller anna"), so that a
    prefix search finds people by family name as well."""
    words = search_key(text).split(" ")
    if len(words) < 2:
        return words[0] if words else ""
    return " ".join([words[-1], *words[:-1]])
