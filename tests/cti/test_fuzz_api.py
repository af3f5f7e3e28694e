"""Fuzzing the REST API with schemathesis: every operation of the served OpenAPI document gets
schema-valid and schema-invalid requests against the live daemon on 127.0.0.1; no answer may be
a server error, and every answer must be documented (status code, content type, body schema).

The daemon runs in its own thread and event loop, because schemathesis calls it synchronously
over real HTTP. Bounded: a fixed number of examples per operation and mode, derandomized, so the
run is repeatable and takes well under a minute.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import requests
import schemathesis

from tests.cti.test_api_env import daemon_env
from tests.fuzz_support import Live, fuzz_operation, live_daemon, operations

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 8
#: these create accounts or hash passwords (argon2): fewer examples keep the run short
SLOW_OPERATIONS = {"auth_login", "create_agent", "auth_refresh"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("fuzz")

    async def setup(box: Live, serve: Callable[[], Awaitable[None]]) -> None:
        async with daemon_env(tmp) as env:
            admin = await env.account("root", "admin")
            ann = await env.account("ann")
            await env.customer("Erika Muster", "+4930123456")
            env.sim.set_phone("PJSIP/1001", "manual")
            status, _ = await ann.post(
                "/api/agent/login", {"device": "PJSIP/1001", "queues": ["support"]}
            )
            assert status == 200
            env.sim.inbound_call("+4930123456", queue="support")
            box.url = env.url
            box.tokens = {"admin": str(admin.token), "agent": str(ann.token)}
            await serve()

    with live_daemon(setup, "fuzz-daemon") as box:
        yield box


@pytest.mark.parametrize("who", ["admin", "agent"])
def test_fuzz_every_operation(live: Live, who: str) -> None:
    ops = operations(live.url)
    assert len(ops) >= 20
    assert sum(1 for op in ops if "agent" not in op.definition.raw.get("x-roles", ["agent"])) >= 2
    session = requests.Session()
    headers = {"Authorization": f"Bearer {live.tokens[who]}"}
    started = time.monotonic()
    calls = 0
    timings: dict[str, float] = {}
    for op in ops:
        op_id = op.definition.raw.get("operationId", op.label)
        roles = op.definition.raw.get("x-roles")
        if who == "admin" and (roles is None or "agent" in roles):
            continue  # the agent pass covers it; the admin pass goes past the role checks
        n = 2 if op_id in SLOW_OPERATIONS else MAX_EXAMPLES
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            t0 = time.monotonic()
            calls += fuzz_operation(
                op, mode, url=live.url, session=session, headers=headers, max_examples=n
            )
            timings[f"{op_id}:{mode.value}"] = time.monotonic() - t0
    slowest = sorted(timings.items(), key=lambda kv: -kv[1])[:5]
    print(f"{calls} requests as {who} in {time.monotonic() - started:.1f}s; slowest {slowest}")
    assert calls > (10 if who == "admin" else 100)
    assert time.monotonic() - started < 120


def test_unknown_api_paths_answer_json(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.tokens['agent']}"}
    r = requests.get(live.url + "/api/nope", headers=headers, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = requests.delete(live.url + "/api/me", headers=headers, timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = requests.post(live.url + "/api/calls//notes", headers=headers, json={}, timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.post(
        live.url + "/api/calls/x/notes",
        headers=headers,
        data=b"x" * (2 * 1024 * 1024),
        timeout=10,
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
