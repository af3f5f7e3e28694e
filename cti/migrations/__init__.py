"""Alembic revisions of cti's own tables (accounts), a branch labelled "cti" next to the CRM
bridge's; `crm_bridge.db.migrate` runs every branch when given `VERSIONS_DIR`."""

from __future__ import annotations

from pathlib import Path

VERSIONS_DIR = Path(__file__).resolve().parent / "versions"


async def migrate(url: str) -> None:
    """Bring the database at `url` (CRM tables and cti's own) to the newest revision."""
    from crm_bridge.db import migrate as crm_migrate

    await crm_migrate(url, extra_version_locations=[str(VERSIONS_DIR)])
