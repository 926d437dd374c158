"""The answers of mutating use cases, stored verbatim for idempotent replay."""

from __future__ import annotations

from dataclasses import dataclass

from billing_service.domain.model import Account, Bucket, LedgerEntry, Reservation
from billing_service.domain.pricing import Comparison, Cost


@dataclass(frozen=True)
class AccountResult:
    """An account after a create or update."""

    account: Account


@dataclass(frozen=True)
class GrantResult:
    """A grant's bucket and the entry that moved the balance, if any did."""

    grant: Bucket
    entry: LedgerEntry | None


@dataclass(frozen=True)
class SpendResult:
    """A SPEND entry and the account's available credits right after it."""

    entry: LedgerEntry
    available: int


@dataclass(frozen=True)
class ReservationResult:
    """A hold after a reserve, commit or release, and the commit's entry if one was written.

    A commit priced from usage also carries that usage's cost, its comparison with the hold's
    estimate, and what was charged (less than the cost when the overrun policy capped it).
    """

    reservation: Reservation
    entry: LedgerEntry | None = None
    actual_cost: Cost | None = None
    comparisons: tuple[Comparison, ...] = ()
    charged: int | None = None


@dataclass(frozen=True)
class RefundResult:
    """The REFUND entry."""

    entry: LedgerEntry
