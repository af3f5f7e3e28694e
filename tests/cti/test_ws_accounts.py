"""A disabled account cannot open the websocket even with a token that has not expired."""

from __future__ import annotations

from pathlib import Path

import pytest

from crm_bridge.db import make_engine
from cti.accounts import AccountStore
from cti.auth import Principal
from cti.migrations import migrate
from tests.cti.test_ws_support import closed_with, recv, start_env

pytestmark = pytest.mark.slow  # argon2


async def test_disabled_or_unknown_account_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"
    await migrate(url)
    engine = make_engine(url)
    store = AccountStore(engine)
    env = await start_env(accounts=store)
    try:
        anna = await store.create("anna", "anna-password")
        ws = await env.connect(anna)
        assert (await recv(ws))["type"] == "hello"
        await ws.close()
        await store.disable(anna.agent_id)
        ws = await env.connect(anna)  # same kind of token, still valid for a minute
        err = await recv(ws)
        assert err["type"] == "error" and "disabled" in err["data"]["message"]
        assert await closed_with(ws) == 4001
        ghost = Principal(agent_id="deadbeef", username="ghost", role="admin")
        ws = await env.connect(ghost)
        assert await closed_with(ws) == 4001
    finally:
        await env.close()
        await engine.dispose()
