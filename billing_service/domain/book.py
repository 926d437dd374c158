"""The credits of one account inside one unit of work: the only place balances change.

The service layer loads an account's live buckets under the account's lock, applies one
operation here, and writes back what changed. Invariants kept by this module (DESIGN §4):

1. balance == sum of the account's ledger entries: every change of `balance` goes through
   `_write_entry`, which appends the entry that explains it.
2. balance == sum of `remaining` over the account's non-pending buckets, and held == sum of
   `held`; so available == balance - held == the spendable credits of active buckets once
   `mature()` has run.
3. A PREPAID account never goes below zero available: `_take` refuses before touching anything.
4. A bucket's held part stays spendable by its hold after the bucket expires or is voided; when
   the hold lets go of it, `_close_dead_remainders` removes it with an EXPIRY or VOID entry.
5. Buckets of a frozen source (purchases under dispute, an allowance past due) stay in the
   balance but cannot be spent or held: `available` leaves out their unheld credits and `_take`
   skips them. Holds made before the freeze keep what they hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from billing_service.domain.amounts import MAX_BALANCE_MICROS, format_amount
from billing_service.domain.errors import FailedPrecondition, InsufficientCredits, InvalidField
from billing_service.domain.ids import new_id
from billing_service.domain.model import (
    DEFAULT_PRIORITY,
    Bucket,
    EntryContext,
    EntryKind,
    GrantSource,
    GrantStatus,
    LedgerEntry,
    Movement,
)

_CLOSING_KIND = {GrantStatus.EXPIRED: EntryKind.EXPIRY, GrantStatus.VOIDED: EntryKind.VOID}


class AccountBook:
    """One account's balance, holds and live buckets, changed only through its methods."""

    def __init__(
        self,
        account_id: str,
        *,
        balance: int,
        held: int,
        buckets: Iterable[Bucket],
        now: datetime,
        frozen_sources: frozenset[GrantSource] = frozenset(),
    ) -> None:
        self.account_id = account_id
        self.balance = balance
        self.held = held
        self.now = now
        self.frozen_sources = frozen_sources
        self.buckets: dict[str, Bucket] = {b.id: b for b in buckets}
        self.new_entries: list[LedgerEntry] = []
        self.new_bucket_ids: set[str] = set()
        self.changed_bucket_ids: set[str] = set()
        self.expiry_changed_ids: set[str] = set()

    @property
    def available(self) -> int:
        """Credits that can be spent or held now."""
        if not self.frozen_sources:
            return self.balance - self.held
        return self.balance - self.held - self.frozen

    @property
    def frozen(self) -> int:
        """Unheld credits in buckets of a frozen source."""
        return sum(
            b.unheld
            for b in self.buckets.values()
            if b.source in self.frozen_sources and self._is_spendable_status(b)
        )

    def add_buckets(self, buckets: Iterable[Bucket]) -> None:
        """Make buckets that are not live (spent, expired) known, e.g. for a refund."""
        for bucket in buckets:
            self.buckets.setdefault(bucket.id, bucket)

    def changed_buckets(self) -> list[Bucket]:
        """Buckets changed by this unit of work, not counting new ones."""
        return [self.buckets[i] for i in sorted(self.changed_bucket_ids - self.new_bucket_ids)]

    def created_buckets(self) -> list[Bucket]:
        """Buckets created by this unit of work."""
        return [self.buckets[i] for i in sorted(self.new_bucket_ids)]

    def next_event_at(self) -> datetime | None:
        """When a bucket next becomes effective or expires, if ever."""
        times = [
            b.effective_at if b.status is GrantStatus.PENDING else b.expires_at
            for b in self.buckets.values()
            if b.status is GrantStatus.PENDING or (b.status is GrantStatus.ACTIVE and b.remaining)
        ]
        present = [t for t in times if t is not None]
        return min(present) if present else None

    # -- time ------------------------------------------------------------------------------

    def mature(self) -> None:
        """Bring buckets up to now: activate pending grants that took effect, expire the rest."""
        for bucket in sorted(self.buckets.values(), key=lambda b: (b.effective_at, b.id)):
            if bucket.status is GrantStatus.PENDING and bucket.effective_at <= self.now:
                self._activate(bucket)
        for bucket in sorted(self.buckets.values(), key=lambda b: (b.expires_at or self.now, b.id)):
            if (
                bucket.status is GrantStatus.ACTIVE
                and bucket.expires_at is not None
                and bucket.expires_at <= self.now
            ):
                self._close(bucket, GrantStatus.EXPIRED, EntryContext())

    # -- grants ----------------------------------------------------------------------------

    def grant(
        self,
        *,
        source: GrantSource,
        amount: int,
        priority: int | None,
        effective_at: datetime | None,
        expires_at: datetime | None,
        description: str,
        metadata: Mapping[str, str],
        context: EntryContext,
    ) -> tuple[Bucket, LedgerEntry | None]:
        """Create a bucket; it joins the balance now or, if it starts later, when it matures."""
        effective = effective_at or self.now
        if expires_at is not None and expires_at <= max(effective, self.now):
            raise InvalidField("expire_time", "must be later than now and than effective_time")
        pending = sum(b.remaining for b in self.buckets.values() if b.status is GrantStatus.PENDING)
        if self.balance + pending + amount > MAX_BALANCE_MICROS:
            raise FailedPrecondition(
                f"account {self.account_id!r} would hold more than "
                f"{format_amount(MAX_BALANCE_MICROS)} credits",
                reason="BALANCE_LIMIT_EXCEEDED",
                account_id=self.account_id,
                limit=format_amount(MAX_BALANCE_MICROS),
            )
        bucket = Bucket(
            id=new_id("grt"),
            account_id=self.account_id,
            source=source,
            amount=amount,
            remaining=amount,
            held=0,
            priority=DEFAULT_PRIORITY if priority is None else priority,
            effective_at=effective,
            expires_at=expires_at,
            status=GrantStatus.PENDING,
            description=description,
            metadata=dict(metadata),
            created_at=self.now,
        )
        self._put(bucket, new=True)
        entry = self._activate(bucket, context) if effective <= self.now else None
        return self.buckets[bucket.id], entry

    def void(self, grant_id: str, context: EntryContext) -> tuple[Bucket, LedgerEntry | None]:
        """Void a grant's unspent, unheld remainder; its held part goes when its hold resolves."""
        bucket = self.buckets[grant_id]
        if bucket.status is GrantStatus.PENDING:
            voided = replace(bucket, status=GrantStatus.VOIDED, remaining=0)
            self._put(voided)
            return voided, None
        if bucket.status is not GrantStatus.ACTIVE:
            raise FailedPrecondition(
                f"grant {grant_id!r} is {bucket.status.value.lower()} and cannot be voided",
                reason="GRANT_NOT_ACTIVE",
                grant_id=grant_id,
                status=bucket.status.value,
            )
        entry = self._close(bucket, GrantStatus.VOIDED, context)
        return self.buckets[grant_id], entry

    def expire_now(self, grant_id: str, context: EntryContext) -> LedgerEntry | None:
        """Expire a grant's unheld remainder now, as a RESET renewal does."""
        bucket = self.buckets[grant_id]
        if bucket.status is not GrantStatus.ACTIVE:
            return None
        return self._close(bucket, GrantStatus.EXPIRED, context)

    def set_expiry(self, grant_id: str, expires_at: datetime | None) -> None:
        """Change when an active grant's remainder expires, e.g. when an upgrade moves a
        period's allowance from a plan that resets to one that carries credits over."""
        bucket = self.buckets[grant_id]
        if bucket.status is not GrantStatus.ACTIVE or bucket.expires_at == expires_at:
            return
        if expires_at is not None and expires_at <= self.now:
            raise InvalidField("expire_time", "must be later than now")
        self._put(replace(bucket, expires_at=expires_at))
        self.expiry_changed_ids.add(grant_id)

    def changed_expiries(self) -> list[Bucket]:
        """Existing buckets whose expiry this unit of work changed."""
        return [self.buckets[i] for i in sorted(self.expiry_changed_ids - self.new_bucket_ids)]

    def take_back(self, grant_id: str, amount: int, context: EntryContext) -> LedgerEntry | None:
        """Void up to `amount` of a grant's unheld remainder (a refund or a lost dispute
        claws back what is left of a purchase); the bucket stays active with the rest."""
        bucket = self.buckets.get(grant_id)
        if bucket is None or not self._is_spendable_status(bucket):
            return None
        gone = min(amount, bucket.unheld)
        if gone <= 0:
            return None
        self._adjust(grant_id, remaining=-gone)
        return self._write_entry(EntryKind.VOID, -gone, ((grant_id, -gone),), context)

    # -- spending and holds ----------------------------------------------------------------

    def spend(self, amount: int, context: EntryContext) -> LedgerEntry:
        """Debit amount at once, draining buckets in order."""
        movements = self._take(amount)
        for grant_id, credits in movements:
            self._adjust(grant_id, remaining=-credits)
        return self._write_entry(EntryKind.SPEND, -amount, _negate(movements), context)

    def hold(self, amount: int) -> tuple[Movement, ...]:
        """Claim amount from buckets in drain order; returns the positive allocations."""
        allocations = self._take(amount)
        for grant_id, credits in allocations:
            self._adjust(grant_id, held=credits)
        self.held += amount
        return allocations

    def settle(
        self,
        allocations: tuple[Movement, ...],
        actual: int,
        context: EntryContext,
        reservation_id: str,
    ) -> LedgerEntry | None:
        """Commit a hold at the actual amount: consume held credits, release the rest.

        More than was held needs the difference in the available balance; that is checked
        before anything moves, so a refusal changes nothing.
        """
        held_total = sum(credits for _, credits in allocations)
        extra = actual - held_total
        if extra > 0 and extra > self.available:
            raise self._insufficient(extra)
        consumed: list[Movement] = []
        left = actual
        for grant_id, credits in allocations:
            use = min(credits, left)
            left -= use
            self._adjust(grant_id, held=-credits, remaining=-use)
            if use:
                consumed.append((grant_id, use))
        self.held -= held_total
        if extra > 0:
            for grant_id, credits in self._take(extra):
                self._adjust(grant_id, remaining=-credits)
                consumed.append((grant_id, credits))
        entry = (
            self._write_entry(
                EntryKind.SPEND,
                -actual,
                _negate(_merge(consumed)),
                context,
                reservation_id=reservation_id,
            )
            if actual
            else None
        )
        self._close_dead_remainders()
        return entry

    def release(self, allocations: tuple[Movement, ...]) -> None:
        """Let go of a hold's credits without spending them."""
        for grant_id, credits in allocations:
            self._adjust(grant_id, held=-credits)
        self.held -= sum(credits for _, credits in allocations)
        self._close_dead_remainders()

    def refund(
        self,
        spend: LedgerEntry,
        already_refunded: int,
        amount: int | None,
        context: EntryContext,
    ) -> LedgerEntry:
        """Give back spent credits to the buckets they came from, last drained first.

        Earlier refunds of the same spend took the first `already_refunded` credits of that
        reversed order, so each refund continues where the last stopped. Credits whose bucket
        has expired or been voided go to one new never-expiring REFUND bucket.
        """
        if spend.kind is not EntryKind.SPEND or spend.account_id != self.account_id:
            raise FailedPrecondition(
                f"ledger entry {spend.id!r} is a {spend.kind.value.lower()}, not a spend",
                reason="NOT_A_SPEND",
                ledger_entry_id=spend.id,
            )
        refundable = -spend.amount - already_refunded
        amount = refundable if amount is None else amount
        if amount == 0 or amount > refundable:
            raise FailedPrecondition(
                f"ledger entry {spend.id!r} has {format_amount(refundable)} credits left to "
                f"refund, {format_amount(amount)} asked",
                reason="REFUND_EXCEEDS_SPEND",
                ledger_entry_id=spend.id,
                refundable=format_amount(refundable),
                requested=format_amount(amount),
            )
        skip, left = already_refunded, amount
        movements: list[Movement] = []
        orphaned = 0
        for grant_id, taken in reversed(spend.buckets):
            segment = -taken
            passed = min(skip, segment)
            skip -= passed
            back = min(segment - passed, left)
            if back <= 0:
                continue
            left -= back
            bucket = self.buckets.get(grant_id)
            if bucket is not None and self._is_spendable_status(bucket):
                self._adjust(grant_id, remaining=back)
                movements.append((grant_id, back))
            else:
                orphaned += back
            if left == 0:
                break
        if orphaned:
            bucket = Bucket(
                id=new_id("grt"),
                account_id=self.account_id,
                source=GrantSource.REFUND,
                amount=orphaned,
                remaining=orphaned,
                held=0,
                priority=DEFAULT_PRIORITY,
                effective_at=self.now,
                expires_at=None,
                status=GrantStatus.ACTIVE,
                description=f"refund of {spend.id}",
                metadata={},
                created_at=self.now,
            )
            self._put(bucket, new=True)
            movements.append((bucket.id, orphaned))
        return self._write_entry(
            EntryKind.REFUND, amount, tuple(movements), context, refunded_entry_id=spend.id
        )

    # -- internals -------------------------------------------------------------------------

    def _is_spendable_status(self, bucket: Bucket) -> bool:
        return bucket.status is GrantStatus.ACTIVE and (
            bucket.expires_at is None or bucket.expires_at > self.now
        )

    def _insufficient(self, required: int) -> InsufficientCredits:
        return InsufficientCredits(
            self.account_id,
            balance=format_amount(self.balance),
            held=format_amount(self.held),
            available=format_amount(self.available),
            required=format_amount(required),
        )

    def _take(self, amount: int) -> tuple[Movement, ...]:
        """Choose which buckets pay for amount, in drain order; refuses if they cannot."""
        if amount > self.available:
            raise self._insufficient(amount)
        movements: list[Movement] = []
        left = amount
        spendable = sorted(
            (
                b
                for b in self.buckets.values()
                if self._is_spendable_status(b)
                and b.unheld > 0
                and b.source not in self.frozen_sources
            ),
            key=Bucket.drain_key,
        )
        for bucket in spendable:
            use = min(bucket.unheld, left)
            movements.append((bucket.id, use))
            left -= use
            if left == 0:
                break
        if left:
            # available says the credits exist but the buckets disagree: a corrupted book must
            # never be spent from.
            raise AssertionError(f"book of {self.account_id!r} is inconsistent: {left} unpaid")
        return tuple(movements)

    def _activate(self, bucket: Bucket, context: EntryContext | None = None) -> LedgerEntry:
        self._put(replace(bucket, status=GrantStatus.ACTIVE))
        return self._write_entry(
            EntryKind.GRANT,
            bucket.remaining,
            ((bucket.id, bucket.remaining),),
            context or EntryContext(),
        )

    def _close(
        self, bucket: Bucket, status: GrantStatus, context: EntryContext
    ) -> LedgerEntry | None:
        """Mark a bucket expired or voided and remove its unheld remainder from the balance."""
        gone = bucket.unheld
        self._put(replace(bucket, status=status, remaining=bucket.held))
        if not gone:
            return None
        return self._write_entry(_CLOSING_KIND[status], -gone, ((bucket.id, -gone),), context)

    def _close_dead_remainders(self) -> None:
        """Remove credits a hold let go of in buckets that expired or were voided meanwhile."""
        for bucket in sorted(self.buckets.values(), key=lambda b: b.id):
            if bucket.status in _CLOSING_KIND and bucket.unheld > 0:
                self._close(bucket, bucket.status, EntryContext())

    def _adjust(self, grant_id: str, *, remaining: int = 0, held: int = 0) -> None:
        bucket = self.buckets[grant_id]
        updated = replace(bucket, remaining=bucket.remaining + remaining, held=bucket.held + held)
        if updated.held < 0 or updated.unheld < 0:
            raise AssertionError(f"bucket {grant_id!r} would go negative")
        self._put(updated)

    def _put(self, bucket: Bucket, *, new: bool = False) -> None:
        self.buckets[bucket.id] = bucket
        self.changed_bucket_ids.add(bucket.id)
        if new:
            self.new_bucket_ids.add(bucket.id)

    def _write_entry(
        self,
        kind: EntryKind,
        amount: int,
        movements: tuple[Movement, ...],
        context: EntryContext,
        *,
        reservation_id: str = "",
        refunded_entry_id: str = "",
    ) -> LedgerEntry:
        self.balance += amount
        entry = LedgerEntry(
            id=new_id("txn"),
            account_id=self.account_id,
            kind=kind,
            amount=amount,
            balance_after=self.balance,
            buckets=movements,
            idempotency_key=context.idempotency_key,
            feature=context.feature,
            request_id=context.request_id,
            reservation_id=reservation_id,
            refunded_entry_id=refunded_entry_id,
            metadata=dict(context.metadata),
            created_at=self.now,
            price_book_version=context.price_book_version,
            usage=context.usage,
        )
        self.new_entries.append(entry)
        return entry


def _negate(movements: Iterable[Movement]) -> tuple[Movement, ...]:
    return tuple((grant_id, -credits) for grant_id, credits in movements)


def _merge(movements: Iterable[Movement]) -> tuple[Movement, ...]:
    """Sum movements per bucket, keeping the order in which buckets were first touched."""
    totals: dict[str, int] = {}
    for grant_id, credits in movements:
        totals[grant_id] = totals.get(grant_id, 0) + credits
    return tuple(totals.items())
