"""Phone and e-mail normalization: the one form every lookup compares."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_bridge.normalize import (
    InvalidEmail,
    InvalidNumber,
    WithheldNumber,
    caller_number,
    is_withheld,
    normalize_email,
    normalize_phone,
    parse_phone,
    search_key,
    search_key_last_first,
    timezone_for_number,
    try_normalize_phone,
)

BERLIN = {"region": "DE", "default_area": "30"}


@pytest.mark.parametrize(
    "raw",
    [
        "+4930123456",
        "004930123456",
        "030123456",
        "30123456",
        "123456",  # local number, default area 30 put in front
        "030 123456",
        "030/123456",
        "030-123456",
        "(030) 123 456",
        "+49 (0)30 123456",
        "+49 30 12 34 56",
        " 030.123.456 ",
        "030 123456 x12",
        "030 123456 ext. 12",
        "030/123456;ext=12",
        "+49-30-123456 extension 7",
    ],
)
def test_berlin_forms_all_match(raw: str) -> None:
    assert normalize_phone(raw, **BERLIN) == "+4930123456"


def test_bare_digits_local_or_national() -> None:
    assert normalize_phone("891234567", **BERLIN) == "+49891234567"  # Munich, no trunk 0
    assert normalize_phone("4512345", **BERLIN) == "+49304512345"  # short: Berlin local
    assert normalize_phone("1711234567", **BERLIN) == "+491711234567"  # mobile


def test_without_default_area_a_local_number_is_refused() -> None:
    with pytest.raises(InvalidNumber):
        normalize_phone("123456", region="DE")
    assert normalize_phone("030123456", region="DE") == "+4930123456"


def test_extension_is_kept_apart() -> None:
    p = parse_phone("(030) 123456 x12", **BERLIN)
    assert (p.e164, p.extension, p.region) == ("+4930123456", "12", "DE")
    # a dash is German direct-dial notation: the digits belong to the number
    assert parse_phone("030 1234-56", **BERLIN).e164 == "+4930123456"


def test_mobile_and_foreign_numbers() -> None:
    assert normalize_phone("0171 1234567", **BERLIN) == "+491711234567"
    assert normalize_phone("+1 650 253 0000", **BERLIN) == "+16502530000"
    assert normalize_phone("001 650 253 0000", **BERLIN) == "+16502530000"
    assert normalize_phone("(650) 253-0000", region="US") == "+16502530000"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "anonymous",
        "Anonymous",
        "<unknown>",
        "unknown",
        "restricted",
        "PRIVATE",
        "withheld",
        '"Anonymous"',
    ],
)
def test_withheld_is_distinct(raw: str) -> None:
    assert is_withheld(raw)
    with pytest.raises(WithheldNumber):
        normalize_phone(raw, **BERLIN)
    assert caller_number(raw, **BERLIN) is None
    assert caller_number(None, **BERLIN) is None


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("abc", "not a phone number"),
        ("0800 FLOWERS", "not a phone number"),
        ("12", "too short"),
        ("+49+30123456", "not a phone number"),
        ("1" * 70, "too long"),
        ("+99 123456", "not a"),
        ("030 123456; DROP TABLE", "not a phone number"),
    ],
)
def test_invalid_numbers_have_clear_errors(raw: str, fragment: str) -> None:
    with pytest.raises(InvalidNumber) as e:
        normalize_phone(raw, **BERLIN)
    assert not isinstance(e.value, WithheldNumber)
    assert fragment in str(e.value)
    assert try_normalize_phone(raw, **BERLIN) is None
    with pytest.raises(InvalidNumber):
        caller_number(raw, **BERLIN)


def test_unknown_region_is_an_error() -> None:
    with pytest.raises(InvalidNumber, match="region"):
        normalize_phone("030123456", region="XX")


@given(st.text(max_size=40))
def test_any_text_normalizes_or_raises_invalid_number(text: str) -> None:
    try:
        out = normalize_phone(text, **BERLIN)
    except InvalidNumber:
        return
    assert out.startswith("+") and out[1:].isdigit()
    # normalizing the result again is a no-op
    assert normalize_phone(out, **BERLIN) == out


@given(st.integers(min_value=1_000_000, max_value=99_999_999))
def test_national_and_international_forms_agree(n: int) -> None:
    national = f"030{n}"
    try:
        e164 = normalize_phone(national, **BERLIN)
    except InvalidNumber:
        return
    assert normalize_phone(f"+4930{n}", **BERLIN) == e164
    assert normalize_phone(f"004930{n}", **BERLIN) == e164


def test_email() -> None:
    assert normalize_email("  Anna.Mueller@Example.COM ") == "anna.mueller@example.com"
    assert normalize_email("mailto:a@b.de") == "a@b.de"
    for bad in [
        "",
        "anna",
        "anna@",
        "@example.com",
        "a b@example.com",
        "a@b",
        "a@@b.de",
        "a@b..de",
        "x" * 250 + "@example.com",
    ]:
        with pytest.raises(InvalidEmail):
            normalize_email(bad)


def test_search_keys_and_time_zone() -> None:
    assert search_key("  Anna   MÜLLER ") == "anna muller"
    assert search_key_last_first("Anna Müller") == "muller anna"
    assert search_key_last_first("Cher") == "cher"
    assert timezone_for_number("+4930123456") == "Europe/Berlin"
    assert timezone_for_number("garbage") is None
