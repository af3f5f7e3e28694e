"""dialer: index attempts by campaign and launch time (the answer-rate estimate's window).

Revision ID: dialer_0003
Revises: dialer_0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "dialer_0003"
down_revision = "dialer_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_dialer_attempt_created", "dialer_attempt", ["campaign_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_dialer_attempt_created", table_name="dialer_attempt")
