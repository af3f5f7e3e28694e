"""Fewer b-trees per customer for the bulk import to write.

* ``crm_custom_value`` becomes a WITHOUT ROWID table on SQLite. Every customer carries up
  to 64 custom values, and their table is the largest one a bulk import writes (2-3 rows
  per customer). As a rowid table each value was written twice, into the table and into
  its primary key index (customer_id, field_id); clustered on that key it is one b-tree.
  PostgreSQL has no such option; nothing changes there.
* ``crm_external_id``'s unique key is (value, id_type) instead of (id_type, value): with
  the value first it also serves the search by value alone, and the separate index on
  value goes (one random b-tree insert less per identifier, on every database).

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
    with op.batch_alter_table("crm_external_id") as b:
        b.drop_index("ix_crm_external_id_value")
        b.drop_constraint("uq_crm_external_id_type_value", type_="unique")
        b.create_unique_constraint("uq_crm_external_id_value_type", ["value", "id_type"])


def downgrade() -> None:
    with op.batch_alter_table("crm_external_id") as b:
        b.drop_constraint("uq_crm_external_id_value_type", type_="unique")
        b.create_unique_constraint("uq_crm_external_id_type_value", ["id_type", "value"])
        b.create_index("ix_crm_external_id_value", ["value"], unique=False)
    _rebuild(with_rowid=True)
