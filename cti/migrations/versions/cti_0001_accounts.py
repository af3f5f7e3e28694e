"""cti accounts: agents, supervisors and admins who log in to the CTI.

Revision ID: cti_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "cti_0001"
down_revision = None
branch_labels = ("cti",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cti_accounts",
        sa.Column("agent_id", sa.String(32), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("username", name="uq_cti_accounts_username"),
    )


def downgrade() -> None:
    op.drop_table("cti_accounts")
