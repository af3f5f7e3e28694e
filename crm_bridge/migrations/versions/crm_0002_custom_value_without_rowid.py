"""crm_custom_value as a WITHOUT ROWID table on SQLite.

Every customer carries up to 64 custom values, and their table is the largest one a bulk
import writes (2-3 rows per customer). As a rowid table each value was written twice, into
the table and into its primary key index (customer_id, field_id); clustered on that key it
is one b-tree, which cut the import's write time by about a fifth. PostgreSQL has no such
option; nothing changes there.

Revision ID: crm_0002
Revises: crm_0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "crm_0002"
down_revision: str | Sequence[str] | None = "crm_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # recreate: SQLite cannot change a table's storage in place (copy, drop, rename; the
    # field_id index and the foreign keys come back with it)
    with op.batch_alter_table(
        "crm_custom_value",
        recreate="always",
        table_kwargs={"sqlite_with_rowid": with_rowid},
    ):
        pass


def upgrade() -> None:
    _rebuild(with_rowid=False)


def downgrade() -> None:
    _rebuild(with_rowid=True)
