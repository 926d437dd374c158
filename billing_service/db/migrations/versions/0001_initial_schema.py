"""Initial schema: accounts, buckets, the append-only ledger, reservations, idempotency.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 20:30:02.306288
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("billing_mode", sa.String(length=16), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("parent_id", sa.String(length=128), nullable=True),
        sa.Column("low_balance_threshold", sa.BigInteger(), nullable=True),
        sa.Column("metadata", sa.Text(), server_default="{}", nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("held", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("sweep_due_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["accounts.id"], name=op.f("fk_accounts_parent_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_accounts_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_accounts_sweep_due_at"), ["sweep_due_at"], unique=False
        )

    op.create_table(
        "idempotency_records",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_records")),
    )
    op.create_table(
        "buckets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("effective_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("metadata", sa.Text(), server_default="{}", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_buckets_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_buckets")),
    )
    with op.batch_alter_table("buckets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_buckets_account_id_created_at"),
            ["account_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_buckets_live",
            ["account_id"],
            unique=False,
            sqlite_where=sa.text("remaining > 0 OR status = 'PENDING'"),
            postgresql_where=sa.text("remaining > 0 OR status = 'PENDING'"),
        )

    op.create_table(
        "ledger_entries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("buckets", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), server_default="", nullable=False),
        sa.Column("feature", sa.String(length=128), server_default="", nullable=False),
        sa.Column("request_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("reservation_id", sa.String(length=40), server_default="", nullable=False),
        sa.Column("refunded_entry_id", sa.String(length=40), server_default="", nullable=False),
        sa.Column("metadata", sa.Text(), server_default="{}", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_ledger_entries_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("id", name=op.f("uq_ledger_entries_id")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_account_id_seq"), ["account_id", "seq"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_refunded_entry_id"), ["refunded_entry_id"], unique=False
        )

    op.create_table(
        "reservations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("committed_amount", sa.BigInteger(), nullable=True),
        sa.Column("allocations", sa.Text(), nullable=False),
        sa.Column("feature", sa.String(length=128), server_default="", nullable=False),
        sa.Column("request_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("metadata", sa.Text(), server_default="{}", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        sa.Column("ledger_entry_id", sa.String(length=40), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_reservations_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reservations_account_id_created_at"),
            ["account_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_reservations_status_expires_at"), ["status", "expires_at"], unique=False
        )

    _forbid_ledger_rewrites()


def downgrade() -> None:
    """Revert this revision."""
    _allow_ledger_rewrites()
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservations_status_expires_at"))
        batch_op.drop_index(batch_op.f("ix_reservations_account_id_created_at"))

    op.drop_table("reservations")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_refunded_entry_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_entries_account_id_seq"))

    op.drop_table("ledger_entries")
    with op.batch_alter_table("buckets", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_buckets_live",
            sqlite_where=sa.text("remaining > 0 OR status = 'PENDING'"),
            postgresql_where=sa.text("remaining > 0 OR status = 'PENDING'"),
        )
        batch_op.drop_index(batch_op.f("ix_buckets_account_id_created_at"))

    op.drop_table("buckets")
    op.drop_table("idempotency_records")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_sweep_due_at"))
        batch_op.drop_index(batch_op.f("ix_accounts_parent_id"))

    op.drop_table("accounts")


def _forbid_ledger_rewrites() -> None:
    """Make the database itself refuse UPDATE and DELETE on ledger entries."""
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entries_no_{action.lower()} BEFORE {action} "
                "ON ledger_entries BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END"
            )
        return
    op.execute(
        "CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'ledger entries are append-only'; END $$"
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
        "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
    )


def _allow_ledger_rewrites() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER ledger_entries_no_update")
        op.execute("DROP TRIGGER ledger_entries_no_delete")
        return
    op.execute("DROP TRIGGER ledger_entries_append_only ON ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_append_only()")
