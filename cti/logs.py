"""Logging setup: structlog everywhere, JSON lines in production, readable on a terminal.

Context (call_id, server, agent, campaign) is bound by the code that knows it, with
`log.bind(...)` or `structlog.contextvars.bind_contextvars(...)`. A last processor masks any
value whose key looks like a secret, so a careless `log.info(..., secret=x)` cannot leak it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("secret", "password", "passwd", "token", "authorization")


def _mask_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event_dict:
        lk = key.lower()
        if any(s in lk for s in _SECRET_KEYS) and event_dict[key] not in (None, ""):
            event_dict[key] = "***"
    return event_dict


class _LateStderr:
    """Looks up sys.stderr at every write: test runners and daemons swap it, and a logger that
    kept the old object would write to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or _LateStderr()
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # libraries that log through stdlib logging (aiohttp, sqlalchemy, panoramisk)
    logging.basicConfig(
        level=logging.WARNING, stream=stream, format="%(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("panoramisk").setLevel(logging.CRITICAL)
