"""Fuzzing the dialer's part of the REST API with the dialer enabled (the daemon-wide fuzz
test runs with it disabled): every operation tagged `dialer`, as a supervisor and as an agent,
schema-valid and schema-invalid requests; no server error, every answer documented."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
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

from tests.dialer.test_api_dialer import CSV_OK, dialer_env, upload

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 3
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


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-dialer")
    box = Live()
    ready = threading.Event()
    failed: list[BaseException] = []

    async def main() -> None:
        async with dialer_env(tmp) as env:
            sup = await env.account("sue", "supervisor")
            ann = await env.account("ann")
            st, _ = await sup.post(
                "/api/dialer/campaigns", {"name": "promo", "queue": "sales", "mode": "preview"}
            )
            assert st == 201
            st, _ = await upload(env, str(sup.token), "promo", CSV_OK)
            assert st == 200
            box.url = env.url
            box.tokens = {"supervisor": str(sup.token), "agent": str(ann.token)}
            box.stop = asyncio.Event()
            box.loop = asyncio.get_running_loop()
            ready.set()
            await box.stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:
            failed.append(e)
            ready.set()

    thread = threading.Thread(target=run, name="fuzz-dialer", daemon=True)
    thread.start()
    assert ready.wait(60), "daemon did not start"
    if failed:
        raise failed[0]
    try:
        yield box
    finally:
        box.loop.call_soon_threadsafe(box.stop.set)
        thread.join(30)


@pytest.mark.parametrize("who", ["supervisor", "agent"])
def test_fuzz_dialer_operations(live: Live, who: str) -> None:
    doc = requests.get(live.url + "/api/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    ops = [
        r.ok()  # type: ignore[union-attr]
        for r in schema.get_all_operations()
        if "dialer" in r.ok().definition.raw.get("tags", [])  # type: ignore[union-attr]
    ]
    assert len(ops) >= 18
    session = requests.Session()
    headers = {"Authorization": f"Bearer {live.tokens[who]}"}
    calls = 0
    for op in ops:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategy = op.as_strategy(generation_mode=mode)

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=live.url, session=session, headers=headers)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE
    assert calls > 60
