"""What every use case needs: the database, the clock, the hold policy, the price books,
the billing policy and, when configured, Stripe."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from billing_service.domain.clock import Clock
from billing_service.service_layer.balance_reads import BalanceReads
from billing_service.service_layer.group_commit import GroupCommitter
from billing_service.service_layer.ports import StripePort
from billing_service.service_layer.price_book_cache import PriceBookCache
from billing_service.service_layer.unit_of_work import Database


@dataclass(frozen=True)
class HoldPolicy:
    """How long holds last when the caller does not say, and at most."""

    default_ttl: timedelta = timedelta(minutes=15)
    max_ttl: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class BillingPolicy:
    """How Stripe's payment events act on credits."""

    freeze_allowance_when_past_due: bool = False


@dataclass(frozen=True)
class AppContext:
    """Shared, immutable dependencies of the use cases."""

    db: Database
    clock: Clock
    holds: HoldPolicy
    books: PriceBookCache = field(default_factory=PriceBookCache)
    writes: GroupCommitter = field(default_factory=GroupCommitter)
    reads: BalanceReads = field(default_factory=BalanceReads)
    billing: BillingPolicy = field(default_factory=BillingPolicy)
    # None when no Stripe key is configured: the calls that need Stripe refuse.
    stripe: StripePort | None = None
