"""Fuzzing the dialer's part of the REST API with the dialer enabled (the daemon-wide fuzz
test runs with it disabled): every operation tagged `dialer`, as a supervisor and as an agent,
schema-valid and schema-invalid requests; no server error, every answer documented."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
import requests
import schemathesis

from tests.dialer.test_api_dialer import CSV_OK, dialer_env, upload
from tests.fuzz_support import Live, fuzz_operation, live_daemon, operations

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 3


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("fuzz-dialer")

    async def setup(box: Live, serve: Callable[[], Awaitable[None]]) -> None:
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
            await serve()

    with live_daemon(setup, "fuzz-dialer") as box:
        yield box


@pytest.mark.parametrize("who", ["supervisor", "agent"])
def test_fuzz_dialer_operations(live: Live, who: str) -> None:
    ops = [op for op in operations(live.url) if "dialer" in op.definition.raw.get("tags", [])]
    assert len(ops) >= 18
    session = requests.Session()
    headers = {"Authorization": f"Bearer {live.tokens[who]}"}
    calls = 0
    for op in ops:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            calls += fuzz_operation(
                op, mode, url=live.url, session=session, headers=headers, max_examples=MAX_EXAMPLES
            )
    assert calls > 60
