"""dialer: the kind of line an attempt called (mobile, fixed), for the answer-rate estimate.

Revision ID: dialer_0004
Revises: dialer_0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dialer_0004"
down_revision = "dialer_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "dialer_attempt",
        sa.Column("line", sa.String(8), nullable=False, server_default=""),
    )


def downgrade() -> None:
    with op.batch_alter_table("dialer_attempt") as batch:
        batch.drop_column("line")
