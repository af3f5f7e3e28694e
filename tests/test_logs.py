"""Logs: JSON lines off a terminal; secrets never appear."""

from __future__ import annotations

import io
import json

import structlog

from cti.logs import configure_logging


def test_json_lines_with_context_and_masked_secrets() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        log = structlog.get_logger("t").bind(call_id="1700000000.1", server="pbx1")
        log.info("login", username="cti", secret="hunter2-very-secret", token="abc")
        log.debug("hidden")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) == 1
    rec = lines[0]
    assert rec["event"] == "login"
    assert rec["call_id"] == "1700000000.1"
    assert rec["server"] == "pbx1"
    assert rec["secret"] == "***"
    assert rec["token"] == "***"
    assert "hunter2" not in out.getvalue()


def test_console_output_is_readable_not_json() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    try:
        structlog.get_logger("t").bind(call_id="1700000000.7", agent="a1").info("pop sent")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "pop sent" in text and "call_id=1700000000.7" in text and "agent=a1" in text
    assert not text.lstrip().startswith("{")
