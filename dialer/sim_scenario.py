"""Campaign-floor scenarios for the pacing simulator, read from TOML files.

A scenario describes the floor (agents, logins, breaks), what becomes of a dial (outcome mix
and delays), how long conversations and wrap-ups last, the compliance rules and how the day
changes (e.g. the answer rate halving at noon). Errors name the offending key, because
scenario files are written by hand by supervisors trying "what if" questions.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


class ScenarioError(ValueError):
    """The scenario file is unreadable or a key is missing, unknown or out of range."""


@dataclass(frozen=True, slots=True)
class Dist:
    """A lognormal distribution given by its mean and standard deviation (seconds)."""

    mean: float
    sd: float

    @property
    def mu_sigma(self) -> tuple[float, float]:
        if self.sd <= 0.0:
            return math.log(self.mean), 0.0
        s2 = math.log(1.0 + (self.sd / self.mean) ** 2)
        return math.log(self.mean) - 0.5 * s2, math.sqrt(s2)


@dataclass(frozen=True, slots=True)
class Break:
    at_hours: float
    minutes: float
    spread_minutes: float = 0.0


@dataclass(frozen=True, slots=True)
class Change:
    """From ``at_hours`` on, new outcome shares (the rest of the dials stay unanswered)."""

    at_hours: float
    live: float | None = None
    machine: float | None = None
    busy: float | None = None
    failed: float | None = None
    congestion: float | None = None
    live_factor: float = 1.0


@dataclass(frozen=True, slots=True)
class Mix:
    live: float
    machine: float
    busy: float
    failed: float
    congestion: float

    @property
    def no_answer(self) -> float:
        return max(0.0, 1.0 - self.live - self.machine - self.busy - self.failed - self.congestion)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    agents: int
    day_hours: float = 8.0
    clock_start: float = 0.0
    abandon_cap: float = 0.03
    connect_deadline: float = 2.0
    ring_timeout: float = 25.0
    login_spread_minutes: float = 0.0
    breaks: tuple[Break, ...] = ()
    mix: Mix = field(default_factory=lambda: Mix(0.25, 0.20, 0.10, 0.05, 0.0))
    live_delay: Dist = Dist(9.0, 4.0)
    machine_answer: Dist = Dist(9.0, 4.0)
    busy_delay: Dist = Dist(3.0, 1.0)
    failed_delay: Dist = Dist(1.0, 0.5)
    congestion_delay: Dist = Dist(1.5, 0.5)
    amd_live_delay: float = 1.0
    amd_machine_delay: float = 3.0
    talk: Dist = Dist(120.0, 120.0)
    wrap: Dist = Dist(20.0, 10.0)
    changes: tuple[Change, ...] = ()
    description: str = ""

    def with_agents(self, agents: int) -> Scenario:
        if agents < 1:
            raise ScenarioError("agents.count must be at least 1")
        return replace(self, agents=agents)

    def mix_at(self, hours: float) -> Mix:
        """The outcome shares in force at ``hours`` into the day."""
        mix = self.mix
        for ch in self.changes:
            if ch.at_hours <= hours:
                mix = apply_change(mix, ch)
        return mix


def apply_change(mix: Mix, ch: Change) -> Mix:
    new = Mix(
        ch.live if ch.live is not None else mix.live,
        ch.machine if ch.machine is not None else mix.machine,
        ch.busy if ch.busy is not None else mix.busy,
        ch.failed if ch.failed is not None else mix.failed,
        ch.congestion if ch.congestion is not None else mix.congestion,
    )
    return replace(new, live=new.live * ch.live_factor)


# ---- reading --------------------------------------------------------------------------------

_TOP = {
    "name", "description", "day_hours", "clock_start", "abandon_cap", "connect_deadline",
    "ring_timeout", "agents", "outcomes", "answer_delay", "amd", "talk", "wrap", "changes",
}  # fmt: skip
_MIX_KEYS = ("live", "machine", "busy", "failed", "congestion")


def _num(
    table: dict[str, Any],
    key: str,
    where: str,
    default: float | None = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float:
    name = f"{where}{key}"
    if key not in table:
        if default is None:
            raise ScenarioError(f"missing key '{name}'")
        return default
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ScenarioError(f"key '{name}' must be a number, got {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise ScenarioError(f"key '{name}' must be finite, got {v!r}")
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise ScenarioError(f"key '{name}' must be {'>' if lo_open else '>='} {lo:g}, got {v!r}")
    if hi is not None and x > hi:
        raise ScenarioError(f"key '{name}' must be <= {hi:g}, got {v!r}")
    return x


def _table(doc: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    v = doc.get(key, {})
    if not isinstance(v, dict):
        raise ScenarioError(f"key '{where}{key}' must be a table")
    return v


def _check_keys(table: dict[str, Any], allowed: set[str] | tuple[str, ...], where: str) -> None:
    for k in table:
        if k not in allowed:
            raise ScenarioError(
                f"unknown key '{where}{k}' (expected one of: {', '.join(sorted(allowed))})"
            )


def _dist(table: dict[str, Any], key: str, where: str, default: Dist) -> Dist:
    if key not in table:
        return default
    v = table[key]
    if not isinstance(v, dict):
        raise ScenarioError(f"key '{where}{key}' must be a table with mean and sd")
    _check_keys(v, {"mean", "sd"}, f"{where}{key}.")
    mean = _num(v, "mean", f"{where}{key}.", lo=0.0, lo_open=True)
    sd = _num(v, "sd", f"{where}{key}.", default=0.0, lo=0.0)
    return Dist(mean, sd)


def parse_scenario(doc: dict[str, Any], name: str = "scenario") -> Scenario:
    """Build a Scenario from a parsed TOML document, naming any offending key."""
    _check_keys(doc, _TOP, "")
    base = Scenario(name=str(doc.get("name", name)), agents=1)
    ring_timeout = _num(doc, "ring_timeout", "", base.ring_timeout, lo=1.0)
    agents_t = _table(doc, "agents")
    _check_keys(agents_t, {"count", "login_spread_minutes", "breaks"}, "agents.")
    if "count" not in agents_t:
        raise ScenarioError("missing key 'agents.count'")
    count = agents_t["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ScenarioError(f"key 'agents.count' must be a whole number >= 1, got {count!r}")
    breaks = []
    raw_breaks = agents_t.get("breaks", [])
    if not isinstance(raw_breaks, list):
        raise ScenarioError("key 'agents.breaks' must be an array of tables")
    for i, b in enumerate(raw_breaks):
        where = f"agents.breaks[{i}]."
        if not isinstance(b, dict):
            raise ScenarioError(f"key 'agents.breaks[{i}]' must be a table")
        _check_keys(b, {"at_hours", "minutes", "spread_minutes"}, where)
        breaks.append(
            Break(
                _num(b, "at_hours", where, lo=0.0),
                _num(b, "minutes", where, lo=0.0, lo_open=True),
                _num(b, "spread_minutes", where, 0.0, lo=0.0),
            )
        )
    out_t = _table(doc, "outcomes")
    _check_keys(out_t, _MIX_KEYS, "outcomes.")
    shares = [_num(out_t, k, "outcomes.", getattr(base.mix, k), 0.0, 1.0) for k in _MIX_KEYS]
    if sum(shares) > 1.0 + 1e-9:
        raise ScenarioError(f"key 'outcomes': shares add up to {sum(shares):g} (> 1)")
    mix = Mix(*shares)
    delay_t = _table(doc, "answer_delay")
    _check_keys(delay_t, _MIX_KEYS, "answer_delay.")
    amd_t = _table(doc, "amd")
    _check_keys(amd_t, {"live_delay", "machine_delay"}, "amd.")
    talk_t = _table(doc, "talk")
    _check_keys(talk_t, {"mean", "sd"}, "talk.")
    wrap_t = _table(doc, "wrap")
    _check_keys(wrap_t, {"mean", "sd"}, "wrap.")
    changes = []
    raw_changes = doc.get("changes", [])
    if not isinstance(raw_changes, list):
        raise ScenarioError("key 'changes' must be an array of tables")
    for i, c in enumerate(raw_changes):
        where = f"changes[{i}]."
        if not isinstance(c, dict):
            raise ScenarioError(f"key 'changes[{i}]' must be a table")
        _check_keys(c, {"at_hours", "live_factor", *_MIX_KEYS}, where)
        vals = {k: (_num(c, k, where, lo=0.0, hi=1.0) if k in c else None) for k in _MIX_KEYS}
        changes.append(
            Change(
                at_hours=_num(c, "at_hours", where, lo=0.0),
                live_factor=_num(c, "live_factor", where, 1.0, lo=0.0),
                **vals,
            )
        )
    changes.sort(key=lambda c: c.at_hours)
    sc = Scenario(
        name=str(doc.get("name", name)),
        description=str(doc.get("description", "")),
        agents=count,
        day_hours=_num(doc, "day_hours", "", base.day_hours, lo=0.0, hi=48.0, lo_open=True),
        clock_start=_num(doc, "clock_start", "", base.clock_start),
        abandon_cap=_num(doc, "abandon_cap", "", base.abandon_cap, lo=0.0, hi=0.5, lo_open=True),
        connect_deadline=_num(doc, "connect_deadline", "", base.connect_deadline, lo=0.0),
        ring_timeout=ring_timeout,
        login_spread_minutes=_num(agents_t, "login_spread_minutes", "agents.", 0.0, lo=0.0),
        breaks=tuple(breaks),
        mix=mix,
        live_delay=_dist(delay_t, "live", "answer_delay.", base.live_delay),
        machine_answer=_dist(delay_t, "machine", "answer_delay.", base.machine_answer),
        busy_delay=_dist(delay_t, "busy", "answer_delay.", base.busy_delay),
        failed_delay=_dist(delay_t, "failed", "answer_delay.", base.failed_delay),
        congestion_delay=_dist(delay_t, "congestion", "answer_delay.", base.congestion_delay),
        amd_live_delay=_num(amd_t, "live_delay", "amd.", base.amd_live_delay, lo=0.0),
        amd_machine_delay=_num(amd_t, "machine_delay", "amd.", base.amd_machine_delay, lo=0.0),
        talk=_dist({"talk": talk_t} if talk_t else {}, "talk", "", base.talk),
        wrap=_dist({"wrap": wrap_t} if wrap_t else {}, "wrap", "", base.wrap),
        changes=tuple(changes),
    )
    for i, ch in enumerate(sc.changes):
        m = apply_change(sc.mix, ch)
        if m.live + m.machine + m.busy + m.failed + m.congestion > 1.0 + 1e-9:
            raise ScenarioError(f"key 'changes[{i}]': outcome shares add up to more than 1")
    return sc


def load_scenario(path: str | Path, agents: int | None = None) -> Scenario:
    """Read a scenario file; ``agents`` overrides ``agents.count``."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {p} not found") from None
    except OSError as e:
        raise ScenarioError(f"scenario file {p} cannot be read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"scenario file {p} is not valid TOML: {e}") from None
    sc = parse_scenario(doc, name=p.stem)
    return sc.with_agents(agents) if agents is not None else sc
