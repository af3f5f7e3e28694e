"""Shared harness of the schemathesis fuzz tests: the daemon runs in its own thread and event
loop (schemathesis calls it synchronously over real HTTP), and each operation gets a bounded,
derandomized number of schema-valid and schema-invalid requests. No answer may be a server
error, and every answer must be documented (status code, content type, body schema)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class Live:
    url: str
    tokens: dict[str, str]
    stop: asyncio.Event
    loop: asyncio.AbstractEventLoop


@contextmanager
def live_daemon(
    setup: Callable[[Live, Callable[[], Awaitable[None]]], Coroutine[Any, Any, None]], name: str
) -> Iterator[Live]:
    """Run `setup(box, serve)` in a thread: it starts a daemon, fills `box.url`/`box.tokens`
    and awaits `serve()`, which returns when the test is over."""
    box = Live()
    ready = threading.Event()
    failed: list[BaseException] = []

    async def serve() -> None:
        box.stop = asyncio.Event()
        box.loop = asyncio.get_running_loop()
        ready.set()
        await box.stop.wait()

    def run() -> None:
        try:
            asyncio.run(setup(box, serve))
        except BaseException as e:  # reported below, in the test's thread
            failed.append(e)
            ready.set()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    assert ready.wait(60), "daemon did not start"
    if failed:
        raise failed[0]
    try:
        yield box
    finally:
        box.loop.call_soon_threadsafe(box.stop.set)
        thread.join(30)


def operations(url: str) -> list[Any]:
    doc = requests.get(url + "/api/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


def fuzz_operation(
    op: Any,
    mode: schemathesis.GenerationMode,
    *,
    url: str,
    session: requests.Session,
    headers: dict[str, str],
    max_examples: int,
) -> int:
    """Send up to `max_examples` generated requests for `op`; returns how many were sent."""
    calls = 0

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        response = case.call(base_url=url, session=session, headers=headers)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        )
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # nothing to break in an operation without parameters or body
        assert mode is schemathesis.GenerationMode.NEGATIVE
    return calls
