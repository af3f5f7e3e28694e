"""CRM base schema: customers, contact points, custom fields, interactions, cases, callbacks,
consent, do-not-call list and the append-only audit log.

Base revision of the ``crm`` branch; other packages' branches ``depends_on`` it.

Revision ID: crm_0001
Revises:
Create Date: 2026-11-23 23:42:45.233634
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "crm_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("crm",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crm_audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_audit")),
    )
    with op.batch_alter_table("crm_audit", schema=None) as batch_op:
        batch_op.create_index("ix_crm_audit_entity", ["entity", "entity_id", "id"], unique=False)

    op.create_table(
        "crm_custom_field",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("choices", sa.JSON(), nullable=False),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "type IN ('text', 'number', 'date', 'bool', 'choice')",
            name=op.f("ck_crm_custom_field_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_custom_field")),
        sa.UniqueConstraint("name", name=op.f("uq_crm_custom_field_name")),
    )
    op.create_table(
        "crm_customer",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "name_key",
            sa.String(length=200).with_variant(sa.String(length=200, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "name_rkey",
            sa.String(length=200).with_variant(sa.String(length=200, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("street", sa.String(length=200), nullable=False),
        sa.Column("postcode", sa.String(length=20), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("segment", sa.String(length=50), nullable=False),
        sa.Column("vip", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(length=35), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('person', 'organisation')", name=op.f("ck_crm_customer_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_customer")),
    )
    with op.batch_alter_table("crm_customer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_customer_name_key"), ["name_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_crm_customer_name_rkey"), ["name_rkey"], unique=False)
        batch_op.create_index(batch_op.f("ix_crm_customer_postcode"), ["postcode"], unique=False)

    op.create_table(
        "crm_disposition",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("effect", sa.String(length=32), nullable=False),
        sa.CheckConstraint(
            "scope_kind IN ('', 'queue', 'campaign')", name=op.f("ck_crm_disposition_scope_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_disposition")),
        sa.UniqueConstraint("scope_kind", "scope", "code", name="uq_crm_disposition_code"),
    )
    op.create_table(
        "crm_dnc",
        sa.Column("e164", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=80), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("e164", name=op.f("pk_crm_dnc")),
    )
    op.create_table(
        "crm_case",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("type", sa.String(length=80), nullable=False),
        sa.Column("category", sa.String(length=80), nullable=False),
        sa.Column("subcategory", sa.String(length=80), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=80), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'pending', 'closed')", name=op.f("ck_crm_case_status")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["crm_customer.id"],
            name=op.f("fk_crm_case_customer_id_crm_customer"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_case")),
    )
    with op.batch_alter_table("crm_case", schema=None) as batch_op:
        batch_op.create_index("ix_crm_case_customer", ["customer_id", "status"], unique=False)

    op.create_table(
        "crm_consent",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=50), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=80), nullable=False),
        sa.CheckConstraint(
            "channel IN ('phone', 'email', 'chat', 'sms')", name=op.f("ck_crm_consent_channel")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["crm_customer.id"],
            name=op.f("fk_crm_consent_customer_id_crm_customer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_consent")),
    )
    with op.batch_alter_table("crm_consent", schema=None) as batch_op:
        batch_op.create_index(
            "ix_crm_consent_lookup", ["customer_id", "channel", "purpose", "at"], unique=False
        )

    op.create_table(
        "crm_custom_value",
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("field_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("value_text", sa.String(length=1000), nullable=True),
        sa.Column("value_number", sa.Float(), nullable=True),
        sa.Column("value_date", sa.Date(), nullable=True),
        sa.Column("value_bool", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["crm_customer.id"],
            name=op.f("fk_crm_custom_value_customer_id_crm_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["field_id"],
            ["crm_custom_field.id"],
            name=op.f("fk_crm_custom_value_field_id_crm_custom_field"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", "field_id", name=op.f("pk_crm_custom_value")),
    )
    with op.batch_alter_table("crm_custom_value", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_crm_custom_value_field_id"), ["field_id"], unique=False
        )

    op.create_table(
        "crm_email",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["crm_customer.id"],
            name=op.f("fk_crm_email_customer_id_crm_customer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_email")),
        sa.UniqueConstraint("customer_id", "email", name="uq_crm_email_customer"),
    )
    with op.batch_alter_table("crm_email", schema=None) as batch_op:
        batch_op.create_index("ix_crm_email_lookup", ["email", "customer_id"], unique=False)

    op.create_table(
        "crm_external_id",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("id_type", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["crm_customer.id"],
            name=op.f("fk_crm_external_id_customer_id_crm_customer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_external_id")),
        sa.UniqueConstraint("id_type", "value", name="uq_crm_external_id_type_value"),
    )
    with op.batch_alter_table("crm_external_id", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_crm_external_id_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index("ix_crm_external_id_value", ["value"], unique=False)

    op.create_table(
        "crm_interaction",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("leg", sa.String(length=128), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("did", sa.String(length=64), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queue", sa.String(length=80), nullable=False),
        sa.Column("agent", sa.String(length=80), nullable=False),
        sa.Column("campaign", sa.String(length=80), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("disposition", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "channel IN ('phone', 'email', 'chat', 'sms')", name=op.f("ck_crm_interaction_channel")
        ),
        sa.CheckConstraint(
            "direction IN ('inbound', 'outbound', 'internal')",
            name=op.f("ck_crm_interaction_direction"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["crm_customer.id"],
            name=op.f("fk_crm_interaction_customer_id_crm_customer"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_interaction")),
        sa.UniqueConstraint("channel", "call_id", "leg", name="uq_crm_interaction_call"),
    )
    with op.batch_alter_table("crm_interaction", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_interaction_agent"), ["agent"], unique=False)
        batch_op.create_index(
            "ix_crm_interaction_customer", ["customer_id", "offered_at"], unique=False
        )

    op.create_table(
        "crm_phone",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("raw", sa.String(length=64), nullable=False),
        sa.Column("e164", sa.String(length=20), nullable=False),
        sa.Column("extension", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('mobile', 'landline', 'work', 'fax', 'other')", name=op.f("ck_crm_phone_kind")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["crm_customer.id"],
            name=op.f("fk_crm_phone_customer_id_crm_customer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_phone")),
        sa.UniqueConstraint("customer_id", "e164", "extension", name="uq_crm_phone_customer"),
    )
    with op.batch_alter_table("crm_phone", schema=None) as batch_op:
        batch_op.create_index("ix_crm_phone_lookup", ["e164", "customer_id", "kind"], unique=False)

    op.create_table(
        "crm_callback",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "interaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=80), nullable=True),
        sa.Column("campaign", sa.String(length=80), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('scheduled', 'offered', 'done', 'missed', 'cancelled')",
            name=op.f("ck_crm_callback_state"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["crm_customer.id"],
            name=op.f("fk_crm_callback_customer_id_crm_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["interaction_id"],
            ["crm_interaction.id"],
            name=op.f("fk_crm_callback_interaction_id_crm_interaction"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_callback")),
    )
    with op.batch_alter_table("crm_callback", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_crm_callback_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index("ix_crm_callback_due", ["state", "due_at"], unique=False)

    op.create_table(
        "crm_case_interaction",
        sa.Column("case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "interaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("linked_by", sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["crm_case.id"],
            name=op.f("fk_crm_case_interaction_case_id_crm_case"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["interaction_id"],
            ["crm_interaction.id"],
            name=op.f("fk_crm_case_interaction_interaction_id_crm_interaction"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", "interaction_id", name=op.f("pk_crm_case_interaction")),
    )
    with op.batch_alter_table("crm_case_interaction", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_crm_case_interaction_interaction_id"), ["interaction_id"], unique=False
        )

    op.create_table(
        "crm_note",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "interaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("author", sa.String(length=80), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["crm_case.id"],
            name=op.f("fk_crm_note_case_id_crm_case"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["crm_customer.id"],
            name=op.f("fk_crm_note_customer_id_crm_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["interaction_id"],
            ["crm_interaction.id"],
            name=op.f("fk_crm_note_interaction_id_crm_interaction"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_note")),
    )
    with op.batch_alter_table("crm_note", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_note_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_crm_note_customer_id"), ["customer_id"], unique=False)

    _install_audit_guard()


def _install_audit_guard() -> None:
    """Make crm_audit append-only in the database itself, not only by convention."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER crm_audit_no_{verb.lower()} BEFORE {verb} ON crm_audit "
                "BEGIN SELECT RAISE(ABORT, 'crm_audit is append-only'); END"
            )
    elif bind.dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION crm_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'crm_audit is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER crm_audit_append_only BEFORE UPDATE OR DELETE ON crm_audit "
            "FOR EACH ROW EXECUTE FUNCTION crm_audit_append_only()"
        )


def _drop_audit_guard() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS crm_audit_no_update")
        op.execute("DROP TRIGGER IF EXISTS crm_audit_no_delete")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS crm_audit_append_only ON crm_audit")
        op.execute("DROP FUNCTION IF EXISTS crm_audit_append_only()")


def downgrade() -> None:
    _drop_audit_guard()
    with op.batch_alter_table("crm_note", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crm_note_customer_id"))
        batch_op.drop_index(batch_op.f("ix_crm_note_case_id"))

    op.drop_table("crm_note")
    with op.batch_alter_table("crm_case_interaction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crm_case_interaction_interaction_id"))

    op.drop_table("crm_case_interaction")
    with op.batch_alter_table("crm_callback", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_callback_due")
        batch_op.drop_index(batch_op.f("ix_crm_callback_customer_id"))

    op.drop_table("crm_callback")
    with op.batch_alter_table("crm_phone", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_phone_lookup")

    op.drop_table("crm_phone")
    with op.batch_alter_table("crm_interaction", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_interaction_customer")
        batch_op.drop_index(batch_op.f("ix_crm_interaction_agent"))

    op.drop_table("crm_interaction")
    with op.batch_alter_table("crm_external_id", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_external_id_value")
        batch_op.drop_index(batch_op.f("ix_crm_external_id_customer_id"))

    op.drop_table("crm_external_id")
    with op.batch_alter_table("crm_email", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_email_lookup")

    op.drop_table("crm_email")
    with op.batch_alter_table("crm_custom_value", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crm_custom_value_field_id"))

    op.drop_table("crm_custom_value")
    with op.batch_alter_table("crm_consent", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_consent_lookup")

    op.drop_table("crm_consent")
    with op.batch_alter_table("crm_case", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_case_customer")

    op.drop_table("crm_case")
    op.drop_table("crm_dnc")
    op.drop_table("crm_disposition")
    with op.batch_alter_table("crm_customer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crm_customer_postcode"))
        batch_op.drop_index(batch_op.f("ix_crm_customer_name_key"))
        batch_op.drop_index(batch_op.f("ix_crm_customer_name_rkey"))

    op.drop_table("crm_customer")
    op.drop_table("crm_custom_field")
    with op.batch_alter_table("crm_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_audit_entity")

    op.drop_table("crm_audit")
