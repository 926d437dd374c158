"""The domain's nouns: accounts, grant buckets, ledger entries, reservations and balances.

All amounts are integer micro-credits (see amounts.py); all times are timezone-aware UTC.
Values are frozen: a change is a new value, so a stored response can never drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from billing_service.domain.pricing import HoldPricing, OverrunPolicy, UsageLine

DEFAULT_PRIORITY = 50

# A movement of credits in one bucket: (grant id, signed micro-credits).
Movement = tuple[str, int]


class BillingMode(StrEnum):
    """How an account pays: credits up front, billed afterwards, or both."""

    PREPAID = "PREPAID"
    POSTPAID = "POSTPAID"
    HYBRID = "HYBRID"


class GrantSource(StrEnum):
    """Where a grant's credits came from."""

    PURCHASE = "PURCHASE"
    SUBSCRIPTION = "SUBSCRIPTION"
    PROMOTIONAL = "PROMOTIONAL"
    ADJUSTMENT = "ADJUSTMENT"
    REFUND = "REFUND"
    TRANSFER = "TRANSFER"
    ROLLOVER = "ROLLOVER"


class GrantStatus(StrEnum):
    """Where a bucket is in its life."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    VOIDED = "VOIDED"


class EntryKind(StrEnum):
    """What moved a balance."""

    GRANT = "GRANT"
    SPEND = "SPEND"
    REFUND = "REFUND"
    VOID = "VOID"
    EXPIRY = "EXPIRY"


class ReservationStatus(StrEnum):
    """Where a hold is in its life."""

    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Account:
    """A holder of credits, keyed by the caller's own id."""

    id: str
    billing_mode: BillingMode
    stripe_customer_id: str
    parent_id: str
    low_balance_threshold: int | None
    metadata: Mapping[str, str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Bucket:
    """One grant's credits. remaining includes held; remaining - held is spendable."""

    id: str
    account_id: str
    source: GrantSource
    amount: int
    remaining: int
    held: int
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    status: GrantStatus
    description: str
    metadata: Mapping[str, str]
    created_at: datetime

    @property
    def unheld(self) -> int:
        """Credits in the bucket that no hold has claimed."""
        return self.remaining - self.held

    def drain_key(self) -> tuple[int, bool, datetime, datetime, str]:
        """Spending order: priority, then soonest expiry (never-expiring last), then age."""
        expiry = self.expires_at or self.created_at
        return (self.priority, self.expires_at is None, expiry, self.created_at, self.id)


@dataclass(frozen=True)
class EntryContext:
    """What a call says about itself, kept on the ledger entries it writes."""

    idempotency_key: str = ""
    feature: str = ""
    request_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    price_book_version: int = 0
    usage: tuple[UsageLine, ...] = ()


@dataclass(frozen=True)
class LedgerEntry:
    """One append-only change of a balance."""

    id: str
    account_id: str
    kind: EntryKind
    amount: int
    balance_after: int
    buckets: tuple[Movement, ...]
    idempotency_key: str
    feature: str
    request_id: str
    reservation_id: str
    refunded_entry_id: str
    metadata: Mapping[str, str]
    created_at: datetime
    price_book_version: int = 0
    usage: tuple[UsageLine, ...] = ()


@dataclass(frozen=True)
class Reservation:
    """A hold on credits. allocations are the positive amounts held in each bucket."""

    id: str
    account_id: str
    amount: int
    status: ReservationStatus
    committed_amount: int | None
    allocations: tuple[Movement, ...]
    feature: str
    request_id: str
    metadata: Mapping[str, str]
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    ledger_entry_id: str
    overrun_policy: OverrunPolicy = OverrunPolicy.ALLOW_FROM_BALANCE
    pricing: HoldPricing | None = None


@dataclass(frozen=True)
class BalanceView:
    """An account's credits at one moment, with the buckets that make them up."""

    account_id: str
    balance: int
    held: int
    available: int
    buckets: tuple[Bucket, ...]
    as_of: datetime
    frozen: int = 0
