"""Hard compliance rules for outbound calls (pure: the caller passes the time).

These are rules, not statistics: a lead that fails one is never dialled, whatever the pacer
wants. When a number's time zone is ambiguous (a country spanning several zones), the
calling window must be open in every candidate zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone


class ComplianceError(ValueError):
    """A rule's configuration is invalid (e.g. a calling window that does not parse)."""


@dataclass(frozen=True, slots=True)
class CallingWindow:
    start: time
    end: time

    @classmethod
    def parse(cls, start: str, end: str) -> CallingWindow:
        try:
            s, e = time.fromisoformat(start), time.fromisoformat(end)
        except ValueError:
            raise ComplianceError(f"calling window {start!r}-{end!r}: use HH:MM") from None
        if not s < e:
            raise ComplianceError(f"calling window {start}-{end}: start must be before end")
        return cls(s, e)

    def is_open(self, now: datetime, zones: tuple[str, ...]) -> bool:
        """`now` must be timezone-aware. Open only if open in every zone."""
        return all(self.start <= now.astimezone(_zone(z)).time() < self.end for z in zones)

    def next_open(self, now: datetime, zones: tuple[str, ...]) -> datetime:
        """The earliest instant >= now at which the window is open in every zone (minute
        resolution), so a lead can be rescheduled instead of polled."""
        if self.is_open(now, zones):
            return now
        candidates = []
        for z in zones:
            local = now.astimezone(_zone(z))
            opening = local.replace(
                hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0
            )
            if opening <= local:
                opening += timedelta(days=1)
            candidates.append(opening)
        t = min(candidates)
        for _ in range(3 * 24 * 60):  # bounded scan: three days of minutes
            if self.is_open(t, zones):
                return t
            t += timedelta(minutes=1)
        raise ComplianceError("no instant where the calling window is open in all time zones")


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ComplianceError(f"unknown time zone {name!r}") from None


@lru_cache(maxsize=65536)
def zones_for_number(e164: str, fallback: str = "Europe/Berlin") -> tuple[str, ...]:
    """Candidate time zones of a number (from its prefix); the fallback when unknown."""
    try:
        num = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return (fallback,)
    zones = tuple(z for z in pn_timezone.time_zones_for_number(num) if z != "Etc/Unknown")
    return zones or (fallback,)


def abandon_budget_left(answered: int, abandoned: int, cap: float) -> float:
    """How many more abandoned calls the window tolerates now (may be negative)."""
    return cap * answered - abandoned


def redial_blocked_until(
    last_abandoned_at: datetime | None,
    last_machine_at: datetime | None,
    *,
    abandon_hours: float,
    machine_hours: float,
) -> datetime | None:
    """No redial within `abandon_hours` of an abandoned call to the number, and machine-detected
    numbers at most once per `machine_hours`; returns when the number may be dialled again."""
    blocks = []
    if last_abandoned_at is not None:
        blocks.append(last_abandoned_at + timedelta(hours=abandon_hours))
    if last_machine_at is not None:
        blocks.append(last_machine_at + timedelta(hours=machine_hours))
    return max(blocks) if blocks else None
