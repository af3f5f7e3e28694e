"""What happens to a lead after an attempt (pure).

Supervisors complain that busy numbers are redialled at random; here every outcome has a
fixed delay and a maximum number of attempts, a lead has a daily cap, and a lead with several
numbers rotates through them (a no-answer on the mobile tries the landline next).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: outcomes after which a lead is finished whatever the counters say
FINAL_OUTCOMES = frozenset({"answered", "handled", "dnc"})


@dataclass(frozen=True, slots=True)
class RetryRule:
    delay_seconds: float
    max_attempts: int


def _default_rules() -> dict[str, RetryRule]:
    return {
        "busy": RetryRule(5 * 60, 5),
        "no-answer": RetryRule(2 * 3600, 3),
        "congestion": RetryRule(60, 5),
        "failed": RetryRule(15 * 60, 2),
        "machine": RetryRule(4 * 3600, 2),
        # an abandoned person is not redialled for 72 h (compliance), then once more
        "abandoned": RetryRule(72 * 3600, 2),
        # the link or the process died mid-call: we do not know whether it rang; try later
        "lost": RetryRule(10 * 60, 2),
    }


@dataclass(frozen=True, slots=True)
class RetryDecision:
    kind: str  # "retry" | "done"
    at: float | None = None
    number_index: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    rules: Mapping[str, RetryRule] = field(default_factory=_default_rules)
    daily_cap: int = 4

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> RetryPolicy:
        """From campaign JSON: {"busy": {"delay_seconds": 300, "max_attempts": 5}, ...,
        "daily_cap": 4}; unknown outcomes and negative numbers are refused."""
        rules = dict(_default_rules())
        cap = 4
        for key, value in data.items():
            if key == "daily_cap":
                if not isinstance(value, int) or value < 1:
                    raise ValueError("retry.daily_cap must be a whole number >= 1")
                cap = value
                continue
            if key not in rules:
                raise ValueError(f"retry.{key}: unknown outcome (known: {', '.join(rules)})")
            if not isinstance(value, Mapping):
                raise ValueError(f"retry.{key}: expected delay_seconds and max_attempts")
            delay = value.get("delay_seconds", rules[key].delay_seconds)
            attempts = value.get("max_attempts", rules[key].max_attempts)
            if not isinstance(delay, int | float) or delay < 0:
                raise ValueError(f"retry.{key}.delay_seconds must be >= 0")
            if not isinstance(attempts, int) or attempts < 0:
                raise ValueError(f"retry.{key}.max_attempts must be a whole number >= 0")
            rules[key] = RetryRule(float(delay), attempts)
        return cls(rules, cap)

    def decide(
        self,
        outcome: str,
        *,
        now: float,
        attempts_with_outcome: int,
        attempts_today: int,
        number_index: int = 0,
        numbers: int = 1,
        next_day_start: float | None = None,
    ) -> RetryDecision:
        """`attempts_with_outcome` counts the attempt just made. `next_day_start` is when the
        lead's next calling day begins (needed when the daily cap is reached)."""
        if outcome in FINAL_OUTCOMES:
            return RetryDecision("done", reason=outcome)
        if outcome == "invalid":
            if number_index + 1 < numbers:
                return RetryDecision("retry", now, number_index + 1, "next number")
            return RetryDecision("done", reason="no valid number")
        rule = self.rules.get(outcome)
        if rule is None:
            return RetryDecision("done", reason=f"no retry rule for {outcome}")
        if attempts_with_outcome >= rule.max_attempts:
            return RetryDecision("done", reason=f"{outcome}: {rule.max_attempts} attempts")
        # rotate to the lead's next number on outcomes that say "not reachable here now"
        idx = number_index
        if numbers > 1 and outcome in ("no-answer", "busy", "machine"):
            idx = (number_index + 1) % numbers
        at = now + rule.delay_seconds
        if attempts_today >= self.daily_cap:
            if next_day_start is None:
                return RetryDecision("done", reason="daily cap and no next day")
            at = max(at, next_day_start)
            return RetryDecision("retry", at, idx, "daily cap reached")
        return RetryDecision("retry", at, idx, outcome)
