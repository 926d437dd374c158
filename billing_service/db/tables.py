"""The schema as SQLAlchemy Core tables; Alembic migrations create it and `alembic check`
keeps the two in step.

Amounts are BIGINT micro-credits, times BIGINT microseconds since the epoch (UTC): exact, fast
and the same on SQLite and PostgreSQL. Enums are stored as their readable names.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# SQLite only turns an INTEGER PRIMARY KEY into the auto-incrementing rowid.
SequenceId = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("billing_mode", String(16), nullable=False),
    Column("stripe_customer_id", String(255), nullable=False, server_default=""),
    Column("parent_id", String(128), ForeignKey("accounts.id"), nullable=True),
    Column("low_balance_threshold", BigInteger, nullable=True),
    Column("metadata", Text, nullable=False, server_default="{}"),
    # Cached sums, changed only together with the rows they sum, under the account's lock.
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    # No bucket or hold of the account changes state by time before this moment (or never).
    Column("sweep_due_at", BigInteger, nullable=True),
    # Grant sources whose unheld credits cannot be spent now (comma-separated), kept in step
    # with open disputes and frozen subscriptions under the account's lock.
    Column("frozen_sources", String(128), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "parent_id"),
    Index(None, "sweep_due_at"),
    Index(None, "stripe_customer_id"),
)

buckets = Table(
    "buckets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(128), ForeignKey("accounts.id"), nullable=False),
    Column("source", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("effective_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("metadata", Text, nullable=False, server_default="{}"),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "account_id", "created_at"),
    # The live buckets of an account: what every spend reads.
    Index(
        "ix_buckets_live",
        "account_id",
        sqlite_where=text("remaining > 0 OR status = 'PENDING'"),
        postgresql_where=text("remaining > 0 OR status = 'PENDING'"),
    ),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", SequenceId, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("account_id", String(128), ForeignKey("accounts.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("buckets", Text, nullable=False),
    Column("idempotency_key", String(255), nullable=False, server_default=""),
    Column("feature", String(128), nullable=False, server_default=""),
    Column("request_id", String(255), nullable=False, server_default=""),
    Column("reservation_id", String(40), nullable=False, server_default=""),
    Column("refunded_entry_id", String(40), nullable=False, server_default=""),
    Column("metadata", Text, nullable=False, server_default="{}"),
    Column("created_at", BigInteger, nullable=False),
    # JSON {"version": N, "usage": [...]} for commits priced from usage; NULL otherwise.
    Column("pricing", Text, nullable=True),
    Index(None, "account_id", "seq"),
    Index(None, "refunded_entry_id"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(128), ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("committed_amount", BigInteger, nullable=True),
    Column("allocations", Text, nullable=False),
    Column("feature", String(128), nullable=False, server_default=""),
    Column("request_id", String(255), nullable=False, server_default=""),
    Column("metadata", Text, nullable=False, server_default="{}"),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("resolved_at", BigInteger, nullable=True),
    Column("ledger_entry_id", String(40), nullable=False, server_default=""),
    Column("overrun_policy", String(24), nullable=False, server_default="ALLOW_FROM_BALANCE"),
    # JSON of the pinned HoldPricing for estimate-sized holds; NULL otherwise.
    Column("pricing", Text, nullable=True),
    Index(None, "account_id", "created_at"),
    Index(None, "status", "expires_at"),
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("operation", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The sweeper deletes records past their retention, oldest first.
    Index(None, "created_at"),
)

# Price book versions are immutable: a change is a new version. Prices are exact decimal
# strings in USD, as published.
price_books = Table(
    "price_books",
    metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("effective_at", BigInteger, nullable=False),
    Column("credit_usd", String(32), nullable=False),
    Column("markup", String(32), nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "effective_at"),
)

model_prices = Table(
    "model_prices",
    metadata,
    Column("version", BigInteger, ForeignKey("price_books.version"), primary_key=True),
    Column("provider", String(64), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("input_per_mtok", String(32), nullable=True),
    Column("cached_input_per_mtok", String(32), nullable=True),
    Column("cache_write_per_mtok", String(32), nullable=True),
    Column("output_per_mtok", String(32), nullable=True),
    Column("reasoning_per_mtok", String(32), nullable=True),
    Column("per_request", String(32), nullable=True),
    Column("per_unit", String(32), nullable=True),
    Column("unit", String(16), nullable=False, server_default=""),
    Column("source", Text, nullable=False, server_default=""),
    Column("as_of", String(10), nullable=False, server_default=""),
)

tiers = Table(
    "tiers",
    metadata,
    Column("version", BigInteger, ForeignKey("price_books.version"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("base_fee", BigInteger, nullable=False),
    Column("fee_unit", String(64), nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
)

price_overrides = Table(
    "price_overrides",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(128), ForeignKey("accounts.id"), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("fixed_price", Text, nullable=True),
    Column("discount_percent", String(16), nullable=True),
    Column("effective_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "account_id", "created_at"),
)

# Credit packages and plans (DESIGN §3 Catalog). Prices are integer minor units, as Stripe
# counts them; credits are micro-credits.
catalog_items = Table(
    "catalog_items",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", Text, nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("unit_amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("interval", String(8), nullable=False, server_default=""),
    Column("renewal_policy", String(16), nullable=False, server_default=""),
    Column("rollover_cap", BigInteger, nullable=True),
    Column("lookup_key", String(200), nullable=False, unique=True),
    Column("stripe_product_id", String(255), nullable=False, server_default=""),
    Column("stripe_price_id", String(255), nullable=False, server_default=""),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "stripe_price_id"),
)

# Every Stripe price an item was ever sold at: subscriptions keep a replaced price until they
# renew, and their events must still find the plan.
catalog_prices = Table(
    "catalog_prices",
    metadata,
    Column("stripe_price_id", String(255), primary_key=True),
    Column("item_id", String(64), ForeignKey("catalog_items.id"), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

# The mirror of Stripe subscriptions. Stripe's state (status, period, plan) is kept with the
# (event time, status rank) of the event that set it, so an older event never overwrites it.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("account_id", String(128), ForeignKey("accounts.id"), nullable=False),
    Column("stripe_customer_id", String(255), nullable=False, server_default=""),
    Column("stripe_plan_id", String(64), nullable=False, server_default=""),
    Column("status", String(24), nullable=False),
    Column("state_event_at", BigInteger, nullable=True),
    Column("state_rank", SmallInteger, nullable=False, server_default="0"),
    Column("current_period_start", BigInteger, nullable=True),
    Column("current_period_end", BigInteger, nullable=True),
    Column("cancel_at_period_end", Boolean, nullable=False, server_default=text("false")),
    Column("canceled_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("allowance_frozen", Boolean, nullable=False, server_default=text("false")),
    # Yearly plans: paid up to here, and the next monthly allowance is due then.
    Column("paid_through", BigInteger, nullable=True),
    Column("next_allowance_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "account_id"),
    Index(None, "next_allowance_at"),
)

# The richest plan seen for each billing period of a subscription: an upgrade counts at once,
# a downgrade waits for the next period, whatever order the events arrive in (a maximum).
billing_periods = Table(
    "billing_periods",
    metadata,
    Column("subscription_id", String(255), ForeignKey("subscriptions.id"), primary_key=True),
    Column("period_start", BigInteger, primary_key=True),
    Column("plan_id", String(64), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# One row per allowance period of a subscription (a month, also of a yearly billing period):
# the guard that grants it once. granted is false for a period recorded without a grant (paid
# after the subscription ended, or after a later period had started).
allowance_periods = Table(
    "allowance_periods",
    metadata,
    Column("subscription_id", String(255), ForeignKey("subscriptions.id"), primary_key=True),
    Column("period_start", BigInteger, primary_key=True),
    Column("period_end", BigInteger, nullable=False),
    Column("billing_period_start", BigInteger, nullable=False),
    Column("plan_id", String(64), nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("carried", BigInteger, nullable=False, server_default="0"),
    Column("granted", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", BigInteger, nullable=False),
)

# What each Checkout session Creditline created for a package sold: its completion grants
# these credits, never what the session's metadata says (anyone able to write metadata could
# otherwise name their own amount).
checkout_offers = Table(
    "checkout_offers",
    metadata,
    Column("checkout_session_id", String(255), primary_key=True),
    Column("account_id", String(128), ForeignKey("accounts.id"), nullable=False),
    Column("package_id", String(64), nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("stripe_price_id", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# Credit packages bought through Checkout, one per session, and what was clawed back.
purchases = Table(
    "purchases",
    metadata,
    Column("checkout_session_id", String(255), primary_key=True),
    Column("account_id", String(128), ForeignKey("accounts.id"), nullable=False),
    Column("package_id", String(64), nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("grant_id", String(40), nullable=False),
    Column("payment_intent_id", String(255), nullable=False, server_default=""),
    Column("amount_total", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("refunded_amount", BigInteger, nullable=False, server_default="0"),
    Column("clawed_back", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "payment_intent_id"),
)

disputes = Table(
    "disputes",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("account_id", String(128), ForeignKey("accounts.id"), nullable=False),
    Column("payment_intent_id", String(255), nullable=False, server_default=""),
    Column("charge_id", String(255), nullable=False, server_default=""),
    Column("state", String(16), nullable=False),
    Column("state_event_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "account_id"),
)

# Refunds and disputes that arrived before the purchase they concern: applied when it arrives.
parked_payment_events = Table(
    "parked_payment_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("payment_intent_id", String(255), nullable=False),
    Column("event", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "payment_intent_id"),
)

# Every Stripe event applied (DESIGN §3): a second delivery finds its row and changes nothing.
stripe_events = Table(
    "stripe_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("applied_at", BigInteger, nullable=False),
    Index(None, "applied_at"),
)
