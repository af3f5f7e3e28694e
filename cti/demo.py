"""What `cti demo` puts in place: a seeded CRM, demo accounts, simulated colleagues.

Idempotent: a second `cti demo` on the same data directory reuses the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import func, select

from crm_bridge.db import make_engine, migrate
from crm_bridge.models import Customer
from crm_bridge.seed import demo_numbers, seed_database
from cti.accounts import AccountStore
from cti.settings import Settings

log = structlog.get_logger(__name__)

DEMO_PASSWORD = "demo-password"
#: (username, display name, device, role); agent1 is left for the person trying the demo
DEMO_ACCOUNTS: list[tuple[str, str, str, str]] = [
    ("agent1", "Agent One", "PJSIP/1001", "agent"),
    ("agent2", "Agent Two", "PJSIP/1002", "agent"),
    ("agent3", "Agent Three", "PJSIP/1003", "agent"),
    ("supervisor", "Sam Supervisor", "", "supervisor"),
    ("admin", "Ada Admin", "", "admin"),
]
DEMO_BOTS = ("agent2", "agent3")
DEMO_QUEUES = ("support", "sales")


async def prepare_demo_data(settings: Settings, *, customers: int) -> list[str]:
    """Migrate, seed the CRM when empty, create the demo accounts; return caller numbers
    that exist in the CRM (the simulator calls from them, so pops find customers)."""
    from cti.app import version_locations

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.database_url()
    await migrate(url, extra_version_locations=version_locations())
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            have = (await conn.execute(select(func.count()).select_from(Customer))).scalar() or 0
        if not have:
            res = await seed_database(engine, customers, seed=settings.simulator.seed)
            log.info("demo CRM seeded", customers=res.customers, seconds=round(res.seconds, 1))
            have = res.customers
        accounts = AccountStore(engine)
        for username, name, _device, role in DEMO_ACCOUNTS:
            if await accounts.by_username(username) is None:
                await accounts.create(username, DEMO_PASSWORD, role=role, display_name=name)
    finally:
        await engine.dispose()
    numbers = demo_numbers(min(int(have), 500), seed=settings.simulator.seed)
    # one caller in five is unknown to the CRM: the "none" pop with search and create
    return [n for i, n in enumerate(numbers) if i % 5] + [
        f"+4930{7000000 + i:07d}" for i in range(0, len(numbers) // 5)
    ]


async def login_bots(daemon: Any, bots: Sequence[str] = DEMO_BOTS) -> None:
    """Log the simulated colleagues in; the simulator's phones answer by themselves."""
    services = daemon.services
    for username, name, device, _role in DEMO_ACCOUNTS:
        if username not in bots:
            continue
        acct = await services.accounts.by_username(username)
        if acct is None:
            continue
        try:
            await services.agents.login(
                acct.agent_id, name=name, device=device, queues=list(DEMO_QUEUES)
            )
        except Exception as e:  # the demo goes on without this colleague
            log.warning("demo agent login failed", agent=username, error=str(e))
