"""cti agent sessions: logins (device, queues, pause) that survive a restart of the daemon.

Asterisk keeps the queue members the CTI added when the daemon restarts; without these rows
the new process would not know whose device rings, and no pop would go out.

Revision ID: cti_0002
Revises: cti_0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "cti_0002"
down_revision = "cti_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cti_agent_sessions",
        sa.Column("agent_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("device", sa.String(100), nullable=False),
        sa.Column("server", sa.String(64), nullable=True),
        sa.Column("queues", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("paused", sa.String(64), nullable=True),
        sa.Column("logged_in_at", sa.Float(), nullable=False),
        sa.Column("state_since", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cti_agent_sessions")
