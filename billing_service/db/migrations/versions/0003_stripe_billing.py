"""Stripe billing: catalog, subscription mirror, allowance periods, purchases, disputes,
processed Stripe events, and the account's frozen grant sources.

The account column is added with plain ALTER TABLE (not a batch rebuild), like 0002.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 22:04:29.232575
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "catalog_items",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("interval", sa.String(length=8), server_default="", nullable=False),
        sa.Column("renewal_policy", sa.String(length=16), server_default="", nullable=False),
        sa.Column("rollover_cap", sa.BigInteger(), nullable=True),
        sa.Column("lookup_key", sa.String(length=200), nullable=False),
        sa.Column("stripe_product_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("stripe_price_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_items")),
        sa.UniqueConstraint("lookup_key", name=op.f("uq_catalog_items_lookup_key")),
    )
    with op.batch_alter_table("catalog_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_catalog_items_stripe_price_id"), ["stripe_price_id"], unique=False
        )

    op.create_table(
        "stripe_events",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("applied_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_stripe_events")),
    )
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripe_events_applied_at"), ["applied_at"], unique=False
        )

    op.create_table(
        "disputes",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("charge_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_event_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_disputes_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disputes")),
    )
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_disputes_account_id"), ["account_id"], unique=False)

    op.create_table(
        "purchases",
        sa.Column("checkout_session_id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("package_id", sa.String(length=64), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("amount_total", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("clawed_back", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_purchases_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("checkout_session_id", name=op.f("pk_purchases")),
    )
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_purchases_payment_intent_id"), ["payment_intent_id"], unique=False
        )

    op.create_table(
        "catalog_prices",
        sa.Column("stripe_price_id", sa.String(length=255), nullable=False),
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["catalog_items.id"], name=op.f("fk_catalog_prices_item_id_catalog_items")
        ),
        sa.PrimaryKeyConstraint("stripe_price_id", name=op.f("pk_catalog_prices")),
    )

    op.create_table(
        "parked_payment_events",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_parked_payment_events")),
    )
    with op.batch_alter_table("parked_payment_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_parked_payment_events_payment_intent_id"),
            ["payment_intent_id"],
            unique=False,
        )

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("stripe_plan_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("state_event_at", sa.BigInteger(), nullable=True),
        sa.Column("state_rank", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("current_period_start", sa.BigInteger(), nullable=True),
        sa.Column("current_period_end", sa.BigInteger(), nullable=True),
        sa.Column(
            "cancel_at_period_end", sa.Boolean(), server_default=sa.text("(false)"), nullable=False
        ),
        sa.Column("canceled_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column(
            "allowance_frozen", sa.Boolean(), server_default=sa.text("(false)"), nullable=False
        ),
        sa.Column("paid_through", sa.BigInteger(), nullable=True),
        sa.Column("next_allowance_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_subscriptions_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscriptions_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_subscriptions_next_allowance_at"), ["next_allowance_at"], unique=False
        )

    op.create_table(
        "billing_periods",
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_billing_periods_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("subscription_id", "period_start", name=op.f("pk_billing_periods")),
    )
    op.create_table(
        "allowance_periods",
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("billing_period_start", sa.BigInteger(), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("carried", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("granted", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_allowance_periods_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint(
            "subscription_id", "period_start", name=op.f("pk_allowance_periods")
        ),
    )
    op.add_column(
        "accounts",
        sa.Column("frozen_sources", sa.String(length=128), server_default="", nullable=False),
    )
    op.create_index(
        op.f("ix_accounts_stripe_customer_id"), "accounts", ["stripe_customer_id"], unique=False
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f("ix_accounts_stripe_customer_id"), table_name="accounts")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("frozen_sources")

    op.drop_table("allowance_periods")
    op.drop_table("billing_periods")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptions_next_allowance_at"))
        batch_op.drop_index(batch_op.f("ix_subscriptions_account_id"))

    op.drop_table("subscriptions")
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_purchases_payment_intent_id"))

    op.drop_table("purchases")
    op.drop_table("parked_payment_events")
    op.drop_table("catalog_prices")
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disputes_account_id"))

    op.drop_table("disputes")
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_events_applied_at"))

    op.drop_table("stripe_events")
    with op.batch_alter_table("catalog_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalog_items_stripe_price_id"))

    op.drop_table("catalog_items")
