"""Checkout offers: what each package Checkout session was created to sell, so its
completion grants that and never the session's metadata.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "checkout_offers",
        sa.Column("checkout_session_id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("package_id", sa.String(length=64), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("stripe_price_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_checkout_offers_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("checkout_session_id", name=op.f("pk_checkout_offers")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("checkout_offers")
