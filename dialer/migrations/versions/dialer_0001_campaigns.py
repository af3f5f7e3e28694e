"""dialer: campaigns, leads, attempts.

Revision ID: dialer_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dialer_0001"
down_revision = None
branch_labels = ("dialer",)
depends_on = "crm_0001"

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dialer_campaign",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(80), nullable=False),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("caller_id", sa.String(80), nullable=False),
        sa.Column("window_start", sa.String(5), nullable=False),
        sa.Column("window_end", sa.String(5), nullable=False),
        sa.Column("abandon_cap", sa.Float(), nullable=False),
        sa.Column("abandon_window", sa.Float(), nullable=False),
        sa.Column("max_ring_seconds", sa.Float(), nullable=False),
        sa.Column("amd", sa.Boolean(), nullable=False),
        sa.Column("safe_harbor", sa.String(80), nullable=False),
        sa.Column("purpose", sa.String(50), nullable=False),
        sa.Column("retry", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("name", name="uq_dialer_campaign_name"),
        sa.CheckConstraint(
            "mode IN ('preview', 'progressive', 'predictive')", name="ck_dialer_campaign_mode"
        ),
        sa.CheckConstraint(
            "state IN ('stopped', 'running', 'paused')", name="ck_dialer_campaign_state"
        ),
        sa.CheckConstraint("max_ring_seconds >= 15", name="ck_dialer_campaign_ring"),
        sa.CheckConstraint(
            "abandon_cap > 0 AND abandon_cap <= 0.05", name="ck_dialer_campaign_cap"
        ),
    )
    op.create_table(
        "dialer_lead",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "campaign_id",
            _ID,
            sa.ForeignKey("dialer_campaign.id", ondelete="CASCADE", name="fk_dialer_lead_campaign"),
            nullable=False,
        ),
        sa.Column("ref", sa.String(80), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("numbers", sa.JSON(), nullable=False),
        sa.Column("number_index", sa.Integer(), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column(
            "customer_id",
            _ID,
            sa.ForeignKey("crm_customer.id", ondelete="SET NULL", name="fk_dialer_lead_customer"),
            nullable=True,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=True),
        sa.Column("callback_agent", sa.String(80), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempts_today", sa.Integer(), nullable=False),
        sa.Column("attempts_day", sa.String(10), nullable=False),
        sa.Column("outcome_counts", sa.JSON(), nullable=False),
        sa.Column("last_outcome", sa.String(16), nullable=False),
        sa.Column("last_attempt_at", sa.Float(), nullable=True),
        sa.Column("done_reason", sa.String(80), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.UniqueConstraint("campaign_id", "ref", name="uq_dialer_lead_ref"),
        sa.CheckConstraint(
            "state IN ('new', 'claimed', 'dialing', 'retry', 'callback', 'done')",
            name="ck_dialer_lead_state",
        ),
    )
    op.create_index(
        "ix_dialer_lead_pick", "dialer_lead", ["campaign_id", "state", "priority", "next_at"]
    )
    op.create_table(
        "dialer_attempt",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "campaign_id",
            _ID,
            sa.ForeignKey(
                "dialer_campaign.id", ondelete="CASCADE", name="fk_dialer_attempt_campaign"
            ),
            nullable=False,
        ),
        sa.Column(
            "lead_id",
            _ID,
            sa.ForeignKey("dialer_lead.id", ondelete="CASCADE", name="fk_dialer_attempt_lead"),
            nullable=False,
        ),
        sa.Column("number", sa.String(20), nullable=False),
        sa.Column("action_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("cause", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=True),
        sa.Column("connected_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("agent", sa.String(80), nullable=False),
        sa.Column("abandoned", sa.Boolean(), nullable=False),
        sa.Column("predicted", sa.Float(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'dialing', 'answered', 'connected', 'ended')",
            name="ck_dialer_attempt_state",
        ),
    )
    op.create_index("ix_dialer_attempt_window", "dialer_attempt", ["campaign_id", "answered_at"])
    op.create_index("ix_dialer_attempt_number", "dialer_attempt", ["number", "ended_at"])
    op.create_index("ix_dialer_attempt_state", "dialer_attempt", ["state"])


def downgrade() -> None:
    op.drop_table("dialer_attempt")
    op.drop_table("dialer_lead")
    op.drop_table("dialer_campaign")
