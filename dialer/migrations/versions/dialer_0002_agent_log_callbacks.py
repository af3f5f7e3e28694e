"""dialer: persisted agent state log (utilization history) and callback lifecycle.

Revision ID: dialer_0002
Revises: dialer_0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dialer_0002"
down_revision = "dialer_0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dialer_agent_event",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("agent", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(80), nullable=True),
        sa.Column("call_id", sa.String(200), nullable=True),
        sa.Column("campaign", sa.String(80), nullable=True),
    )
    op.create_index("ix_dialer_agent_event_at", "dialer_agent_event", ["at"])
    op.create_index("ix_dialer_agent_event_agent", "dialer_agent_event", ["agent", "at"])
    op.create_table(
        "dialer_callback",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "campaign_id",
            _ID,
            sa.ForeignKey(
                "dialer_campaign.id", ondelete="CASCADE", name="fk_dialer_callback_campaign"
            ),
            nullable=False,
        ),
        sa.Column(
            "lead_id",
            _ID,
            sa.ForeignKey("dialer_lead.id", ondelete="CASCADE", name="fk_dialer_callback_lead"),
            nullable=False,
        ),
        sa.Column("agent", sa.String(80), nullable=True),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("attempt_id", sa.String(64), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'dialing', 'done', 'fallback', 'missed', 'cancelled')",
            name="ck_dialer_callback_state",
        ),
    )
    op.create_index("ix_dialer_callback_state", "dialer_callback", ["state", "due_at"])
    op.create_index("ix_dialer_callback_lead", "dialer_callback", ["lead_id"])


def downgrade() -> None:
    op.drop_table("dialer_callback")
    op.drop_table("dialer_agent_event")
