"""A one-line progress bar for long imports, exports and seeding.

Only on a terminal: when stderr is a pipe or a file (cron, CI, `2>log`), carriage-return
animations turn into megabytes of garbage, so the bar is silent there and the command's
closing summary is all that is written. Redraws are throttled (5 per second) so that the
bar costs nothing measurable at 20,000+ rows per second: callers may call update() per row.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        total: int,
        *,
        label: str = "",
        unit: str = "rows",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.2,
        width: int = 30,
    ) -> None:
        """``total`` in the unit that update()'s ``done`` counts (bytes of a file, rows)."""
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total = max(total, 0)
        self.label = label
        self.unit = unit
        self.interval = interval
        self.width = width
        self._start = time.monotonic()
        self._next = 0.0
        self._drawn = False

    def update(self, done: int, count: int | None = None) -> None:
        """Progress is ``done`` of total; ``count`` (rows so far) is shown with a rate."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        self.stream.write("\r" + self.render(done, count, now - self._start))
        self.stream.flush()
        self._drawn = True

    def render(self, done: int, count: int | None, elapsed: float) -> str:
        frac = min(done / self.total, 1.0) if self.total else 0.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        n = done if count is None else count
        rate = n / elapsed if elapsed > 0 else 0.0
        eta = ""
        if 0 < frac < 1 and elapsed > 0.5:
            eta = f" eta {_clock(elapsed / frac - elapsed)}"
        label = f"{self.label} " if self.label else ""
        return f"{label}[{bar}] {frac * 100:5.1f}% {n:,} {self.unit} {rate:,.0f}/s{eta}  "

    def close(self) -> None:
        """Leave the terminal on a fresh line (the summary follows)."""
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}" if s < 3600 else f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
