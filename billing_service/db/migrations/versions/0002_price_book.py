"""Price book: versioned model prices and tiers, account overrides, priced holds and entries.

Columns are added with plain ALTER TABLE (not a batch rebuild), which keeps the ledger's
append-only triggers in place on SQLite.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 21:03:00.818818
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "price_books",
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("effective_at", sa.BigInteger(), nullable=False),
        sa.Column("credit_usd", sa.String(length=32), nullable=False),
        sa.Column("markup", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_price_books")),
    )
    with op.batch_alter_table("price_books", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_price_books_effective_at"), ["effective_at"], unique=False
        )

    op.create_table(
        "model_prices",
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("input_per_mtok", sa.String(length=32), nullable=True),
        sa.Column("cached_input_per_mtok", sa.String(length=32), nullable=True),
        sa.Column("cache_write_per_mtok", sa.String(length=32), nullable=True),
        sa.Column("output_per_mtok", sa.String(length=32), nullable=True),
        sa.Column("reasoning_per_mtok", sa.String(length=32), nullable=True),
        sa.Column("per_request", sa.String(length=32), nullable=True),
        sa.Column("per_unit", sa.String(length=32), nullable=True),
        sa.Column("unit", sa.String(length=16), server_default="", nullable=False),
        sa.Column("source", sa.Text(), server_default="", nullable=False),
        sa.Column("as_of", sa.String(length=10), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["version"], ["price_books.version"], name=op.f("fk_model_prices_version_price_books")
        ),
        sa.PrimaryKeyConstraint("version", "provider", "model", name=op.f("pk_model_prices")),
    )
    op.create_table(
        "price_overrides",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("fixed_price", sa.Text(), nullable=True),
        sa.Column("discount_percent", sa.String(length=16), nullable=True),
        sa.Column("effective_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_price_overrides_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_overrides")),
    )
    with op.batch_alter_table("price_overrides", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_price_overrides_account_id_created_at"),
            ["account_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "tiers",
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("base_fee", sa.BigInteger(), nullable=False),
        sa.Column("fee_unit", sa.String(length=64), server_default="", nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["version"], ["price_books.version"], name=op.f("fk_tiers_version_price_books")
        ),
        sa.PrimaryKeyConstraint("version", "name", name=op.f("pk_tiers")),
    )
    op.add_column("ledger_entries", sa.Column("pricing", sa.Text(), nullable=True))

    op.add_column(
        "reservations",
        sa.Column(
            "overrun_policy",
            sa.String(length=24),
            server_default="ALLOW_FROM_BALANCE",
            nullable=False,
        ),
    )
    op.add_column("reservations", sa.Column("pricing", sa.Text(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    op.drop_column("reservations", "pricing")
    op.drop_column("reservations", "overrun_policy")

    op.drop_column("ledger_entries", "pricing")

    op.drop_table("tiers")
    with op.batch_alter_table("price_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_price_overrides_account_id_created_at"))

    op.drop_table("price_overrides")
    op.drop_table("model_prices")
    with op.batch_alter_table("price_books", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_price_books_effective_at"))

    op.drop_table("price_books")
