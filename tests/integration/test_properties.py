"""Property-based tests of the ledger invariants (DESIGN §4), through the service layer.

A hypothesis state machine plays random sequences of calls against one fresh PREPAID account
per example, on SQLite and on PostgreSQL: grants (whole and fractional amounts, priorities,
expiries, future start times), spends, holds and their commits (nothing, below, at and above
the held amount), releases, refunds (all, part, too much), voids, a repeat of the last call's
idempotency key (same request, and a changed one), clock moves, and the sweeper. Before each
call it predicts from the balance of that moment whether the call must succeed or be refused
and what it must move; after every step it checks, straight from the tables:

1. balance == ledger sum == sum of the non-pending buckets' remaining; held == sum of the
   buckets' held == sum of the active holds; available == balance - held; every entry's
   balance_after is the running sum of the entries up to it, and entries are only appended.
2. available >= 0 and 0 <= held <= remaining <= amount in every bucket.
3. a refused call changes no row anywhere; a repeated key returns the first answer and moves
   nothing, and the key with a different request is refused.
5. every amount a use case returns is an int.

Plus a model of what must have moved: the SPEND entries sum to what was spent and committed,
the REFUND entries to what was refunded, the GRANT entries to the grants that took effect.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

from billing_service.db.codec import to_micros
from billing_service.domain.amounts import format_amount
from billing_service.domain.clock import ManualClock
from billing_service.domain.errors import DomainError
from billing_service.domain.model import (
    BalanceView,
    BillingMode,
    Bucket,
    EntryKind,
    GrantSource,
    GrantStatus,
    ReservationStatus,
)
from billing_service.service_layer import accounts, credits, queries, sweeping
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.idempotency import Outcome
from tests.helpers import ledger_sum, table_counts

MICROS = 1_000_000
# Whole credits and arbitrary micro amounts, down to "0.000001".
GRANTS = st.integers(1, 30).map(lambda c: c * MICROS) | st.integers(1, 30 * MICROS)
# Spends and holds mostly fit the balance; sometimes they cannot.
AMOUNTS = st.one_of(
    st.integers(1, 3).map(lambda c: c * MICROS),
    st.integers(1, 3 * MICROS),
    st.integers(1, 30 * MICROS),
)
# Commits settle nothing, part of, all of or more than the hold; FIGURES picks how much, drawn
# independently of the database so that a failing example replays the same way.
SETTLE_HOW = st.sampled_from(["nothing", "below", "equal", "above"])
FIGURES = st.integers(1, 10 * MICROS)
# How long grants last or take to start, and how far the clock moves in one step.
SPANS = st.integers(60, 4 * 3600).map(lambda s: timedelta(seconds=s))
STEPS = st.integers(1, 3600).map(lambda s: timedelta(seconds=s))
CLOSED = frozenset({GrantStatus.EXPIRED.value, GrantStatus.VOIDED.value})
# Fields of the use cases' answers that carry money.
MONEY_FIELDS = frozenset(
    {"amount", "remaining", "held", "balance", "balance_after", "available", "committed_amount"}
)


class BucketRow(NamedTuple):
    id: str
    status: str
    amount: int
    remaining: int
    held: int
    effective_at: int
    expires_at: int | None


class EntryRow(NamedTuple):
    id: str
    kind: str
    amount: int
    balance_after: int


class HoldRow(NamedTuple):
    id: str
    status: str
    amount: int
    expires_at: int


@dataclass(frozen=True)
class Rows:
    """Everything stored about one account, read behind the service's back."""

    balance: int
    held: int
    sweep_due_at: int | None
    buckets: tuple[BucketRow, ...]
    entries: tuple[EntryRow, ...]
    holds: tuple[HoldRow, ...]

    def bucket(self, grant_id: str) -> BucketRow:
        return next(b for b in self.buckets if b.id == grant_id)

    def entries_since(self, before: Rows) -> tuple[EntryRow, ...]:
        assert self.entries[: len(before.entries)] == before.entries, "ledger was rewritten"
        return self.entries[len(before.entries) :]


def read_rows(engine: Engine, account_id: str) -> Rows:
    """The account's row, buckets, ledger entries (in order) and holds."""
    where = {"a": account_id}
    with engine.connect() as conn:
        balance, held, due = conn.execute(
            text("SELECT balance, held, sweep_due_at FROM accounts WHERE id = :a"), where
        ).one()
        buckets = conn.execute(
            text(
                "SELECT id, status, amount, remaining, held, effective_at, expires_at"
                " FROM buckets WHERE account_id = :a ORDER BY id"
            ),
            where,
        ).all()
        entries = conn.execute(
            text(
                "SELECT id, kind, amount, balance_after FROM ledger_entries"
                " WHERE account_id = :a ORDER BY seq"
            ),
            where,
        ).all()
        holds = conn.execute(
            text(
                "SELECT id, status, amount, expires_at FROM reservations"
                " WHERE account_id = :a ORDER BY id"
            ),
            where,
        ).all()
    return Rows(
        balance=balance,
        held=held,
        sweep_due_at=due,
        buckets=tuple(BucketRow(*r) for r in buckets),
        entries=tuple(EntryRow(*r) for r in entries),
        holds=tuple(HoldRow(*r) for r in holds),
    )


def assert_exact(value: object, name: str = "") -> None:
    """No float or Decimal anywhere in an answer; money fields and movements are ints."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            assert_exact(getattr(value, f.name), f.name)
    elif isinstance(value, Mapping):
        for item in value.values():
            assert_exact(item, name)
    elif isinstance(value, tuple | list):
        for item in value:
            if name in ("buckets", "allocations") and isinstance(item, tuple):
                grant_id, credits_moved = item
                assert type(grant_id) is str
                assert type(credits_moved) is int, f"{name} movement {item!r} is not int"
            else:
                assert_exact(item, name)
    else:
        assert not isinstance(value, float | Decimal), f"{name} is {value!r}"
        if name in MONEY_FIELDS and not (name == "committed_amount" and value is None):
            assert type(value) is int, f"{name} is {type(value).__name__}: {value!r}"


def time_events(rows: Rows) -> list[int]:
    """When each pending grant starts, each live bucket expires and each active hold ends."""
    starts = [b.effective_at for b in rows.buckets if b.status == GrantStatus.PENDING.value]
    expiries = [
        b.expires_at
        for b in rows.buckets
        if b.status == GrantStatus.ACTIVE.value and b.remaining > 0 and b.expires_at is not None
    ]
    ends = [h.expires_at for h in rows.holds if h.status == ReservationStatus.ACTIVE.value]
    return starts + expiries + ends


def gaps_closed(rows: Rows, now: datetime) -> None:
    """Nothing time-driven is left due at now: the service has applied it."""
    at = to_micros(now)
    assert all(t > at for t in time_events(rows)), (at, rows)
    assert rows.sweep_due_at is None or rows.sweep_due_at > at


def _key() -> str:
    return uuid.uuid4().hex


@dataclass
class GrantModel:
    amount: int
    effective_at: datetime
    voided_while_pending: bool = False


@dataclass
class HoldModel:
    amount: int
    expires_at: datetime
    resolved: bool = False  # committed or released by a call


UseCase = Callable[..., Outcome[Any]]


class LedgerMachine(RuleBasedStateMachine):
    """Random calls on one PREPAID account, each checked against what it had to do."""

    ctx: ClassVar[AppContext]
    engine: ClassVar[Engine]
    clock: ClassVar[ManualClock]

    grants = Bundle("grants")
    spends = Bundle("spends")
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.account_id = f"prop-{uuid.uuid4().hex}"
        accounts.create_account(
            self.ctx,
            account_id=self.account_id,
            billing_mode=BillingMode.PREPAID,
            stripe_customer_id="",
            parent_id="",
            low_balance_threshold=None,
            metadata={},
            idempotency_key=_key(),
        )
        self.granted: dict[str, GrantModel] = {}
        self.hold_models: dict[str, HoldModel] = {}
        self.refundable: dict[str, int] = {}
        self.spent = 0
        self.refunded = 0
        self.seen_entries: tuple[EntryRow, ...] = ()
        self.last_call: tuple[UseCase, dict[str, Any], Outcome[Any]] | None = None

    # -- helpers ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Let a microsecond pass before a call that creates a bucket, so no two buckets tie
        in drain order down to their random ids: a failing example then replays alike."""
        self.clock.advance(timedelta(microseconds=1))

    def view(self) -> BalanceView:
        """The balance as of now; applies any due expiry first, so predictions hold."""
        return queries.get_balance(self.ctx, self.account_id)

    def rows(self) -> Rows:
        return read_rows(self.engine, self.account_id)

    def call(self, use_case: UseCase, **kwargs: Any) -> Any:
        """Run a use case that must succeed; remember it for the repeat rule."""
        outcome = use_case(self.ctx, **kwargs)
        assert outcome.replayed is False
        assert_exact(outcome.result)
        self.last_call = (use_case, kwargs, outcome)
        return outcome.result

    def refused(self, why: str, use_case: UseCase, /, **kwargs: Any) -> DomainError:
        """Run a use case that must be refused for reason `why`, and check it changed nothing."""
        before, counts = self.rows(), table_counts(self.engine)
        with pytest.raises(DomainError) as caught:
            use_case(self.ctx, **kwargs)
        assert caught.value.reason == why, caught.value
        assert self.rows() == before
        assert table_counts(self.engine) == counts
        return caught.value

    def hold_expired(self, hold: HoldModel) -> bool:
        return hold.expires_at <= self.clock.now()

    # -- grants ----------------------------------------------------------------------------

    @initialize(
        target=grants,
        amount=st.integers(5, 40).map(lambda c: c * MICROS) | st.integers(MICROS, 40 * MICROS),
        lasts=st.none() | SPANS,
    )
    def first_grant(self, amount: int, lasts: timedelta | None) -> object:
        """Every example starts with credits to spend."""
        return self.grant(amount, GrantSource.PURCHASE, None, None, lasts)

    @rule(
        target=grants,
        amount=GRANTS,
        source=st.sampled_from(list(GrantSource)),
        priority=st.none() | st.integers(0, 100),
        starts_in=st.none() | SPANS,
        lasts=st.none() | SPANS,
    )
    def grant(
        self,
        amount: int,
        source: GrantSource,
        priority: int | None,
        starts_in: timedelta | None,
        lasts: timedelta | None,
    ) -> str:
        self.tick()
        self.view()
        before = self.rows()
        now = self.clock.now()
        effective = None if starts_in is None else now + starts_in
        expires = None if lasts is None else (effective or now) + lasts
        result = self.call(
            credits.grant_credits,
            account_id=self.account_id,
            amount=amount,
            source=source,
            priority=priority,
            effective_at=effective,
            expires_at=expires,
            description="property",
            metadata={},
            idempotency_key=_key(),
        )
        bucket, entry = result.grant, result.entry
        after = self.rows()
        assert (bucket.amount, bucket.remaining, bucket.held) == (amount, amount, 0)
        assert bucket.expires_at == expires
        if effective is None:
            assert bucket.status is GrantStatus.ACTIVE
            assert entry is not None
            assert (entry.kind, entry.amount) == (EntryKind.GRANT, amount)
            assert entry.buckets == ((bucket.id, amount),)
            assert after.entries_since(before) == (
                EntryRow(entry.id, "GRANT", amount, before.balance + amount),
            )
        else:
            assert bucket.status is GrantStatus.PENDING
            assert entry is None
            assert after.entries_since(before) == ()
            assert after.balance == before.balance
        grant_id: str = bucket.id
        self.granted[grant_id] = GrantModel(amount, effective or now)
        return grant_id

    @rule(grant_id=consumes(grants))
    def void(self, grant_id: str) -> None:
        self.view()
        before = self.rows()
        bucket = before.bucket(grant_id)
        kwargs: dict[str, Any] = {"grant_id": grant_id, "reason": "", "idempotency_key": _key()}
        if bucket.status in CLOSED:
            error = self.refused("GRANT_NOT_ACTIVE", credits.void_grant, **kwargs)
            assert error.metadata["status"] == bucket.status
            return
        result = self.call(credits.void_grant, **kwargs)
        after = self.rows()
        assert result.grant.status is GrantStatus.VOIDED
        assert after.bucket(grant_id).remaining == bucket.held
        pending = bucket.status == GrantStatus.PENDING.value
        gone = 0 if pending else bucket.remaining - bucket.held
        if pending:
            self.granted[grant_id].voided_while_pending = True
        if gone:
            assert result.entry is not None
            assert (result.entry.kind, result.entry.amount) == (EntryKind.VOID, -gone)
            assert after.entries_since(before) == (
                EntryRow(result.entry.id, "VOID", -gone, before.balance - gone),
            )
        else:
            assert result.entry is None
            assert after.entries_since(before) == ()
        assert after.balance == before.balance - gone

    # -- spending --------------------------------------------------------------------------

    @rule(target=spends, amount=AMOUNTS)
    def spend(self, amount: int) -> object:
        available = self.view().available
        before = self.rows()
        kwargs: dict[str, Any] = {
            "account_id": self.account_id,
            "amount": amount,
            "feature": "property",
            "request_id": "",
            "metadata": {},
            "idempotency_key": _key(),
        }
        if amount > available:
            error = self.refused("INSUFFICIENT_CREDITS", credits.spend_credits, **kwargs)
            assert error.metadata["available"] == format_amount(available)
            assert error.metadata["required"] == format_amount(amount)
            return multiple()
        result = self.call(credits.spend_credits, **kwargs)
        entry = result.entry
        after = self.rows()
        # Exactly one SPEND entry, of exactly the amount, drawn from the buckets it names.
        assert after.entries_since(before) == (
            EntryRow(entry.id, "SPEND", -amount, before.balance - amount),
        )
        assert entry.kind is EntryKind.SPEND
        assert sum(c for _, c in entry.buckets) == -amount
        assert all(c < 0 for _, c in entry.buckets)
        assert result.available == available - amount
        self.spent += amount
        self.refundable[entry.id] = amount
        return entry.id

    @rule(
        target=holds,
        amount=AMOUNTS,
        ttl=st.none() | st.integers(1, 2 * 3600).map(lambda s: timedelta(seconds=s)),
    )
    def reserve(self, amount: int, ttl: timedelta | None) -> object:
        view = self.view()
        before = self.rows()
        kwargs: dict[str, Any] = {
            "account_id": self.account_id,
            "amount": amount,
            "ttl": ttl,
            "feature": "property",
            "request_id": "",
            "metadata": {},
            "idempotency_key": _key(),
        }
        if amount > view.available:
            self.refused("INSUFFICIENT_CREDITS", credits.reserve_credits, **kwargs)
            return multiple()
        hold = self.call(credits.reserve_credits, **kwargs).reservation
        after = self.rows()
        assert hold.status is ReservationStatus.ACTIVE
        assert hold.amount == amount
        assert hold.expires_at == self.clock.now() + (ttl or self.ctx.holds.default_ttl)
        assert sum(c for _, c in hold.allocations) == amount
        assert all(c > 0 for _, c in hold.allocations)
        assert after.entries_since(before) == ()
        assert (after.balance, after.held) == (before.balance, before.held + amount)
        self.hold_models[hold.id] = HoldModel(amount, hold.expires_at)
        return hold.id

    @rule(target=spends, hold_id=holds, how=SETTLE_HOW, figure=FIGURES)
    def commit(self, hold_id: str, how: str, figure: int) -> object:
        view = self.view()
        before = self.rows()
        hold = self.hold_models[hold_id]
        actual = {
            "nothing": 0,
            "below": 1 + (figure - 1) % (hold.amount - 1) if hold.amount > 1 else 0,
            "equal": hold.amount,
            "above": hold.amount + figure,
        }[how]
        kwargs: dict[str, Any] = {
            "reservation_id": hold_id,
            "amount": actual,
            "idempotency_key": _key(),
        }
        if hold.resolved:
            self.refused("RESERVATION_NOT_ACTIVE", credits.commit_reservation, **kwargs)
            return multiple()
        if self.hold_expired(hold):
            self.refused("RESERVATION_EXPIRED", credits.commit_reservation, **kwargs)
            return multiple()
        if actual - hold.amount > view.available:
            self.refused("INSUFFICIENT_CREDITS", credits.commit_reservation, **kwargs)
            return multiple()
        result = self.call(credits.commit_reservation, **kwargs)
        hold.resolved = True
        after = self.rows()
        settled = result.reservation
        assert settled.status is ReservationStatus.COMMITTED
        assert settled.committed_amount == actual
        assert after.held == before.held - hold.amount
        new = after.entries_since(before)
        # Besides its SPEND, a commit may only close what its hold kept alive in a bucket that
        # expired or was voided meanwhile.
        closing = [e for e in new if e.kind in ("EXPIRY", "VOID")]
        assert all(e.amount < 0 for e in closing)
        assert after.balance == before.balance - actual + sum(e.amount for e in closing)
        if not actual:
            assert result.entry is None
            assert settled.ledger_entry_id == ""
            assert len(closing) == len(new)
            return multiple()
        entry = result.entry
        assert entry is not None
        assert (entry.kind, entry.amount, entry.reservation_id) == (
            EntryKind.SPEND,
            -actual,
            hold_id,
        )
        assert settled.ledger_entry_id == entry.id
        assert [e.id for e in new if e.kind == "SPEND"] == [entry.id]
        assert len(closing) == len(new) - 1
        assert sum(c for _, c in entry.buckets) == -actual
        self.spent += actual
        self.refundable[entry.id] = actual
        return entry.id

    @rule(target=spends, amount=AMOUNTS, how=SETTLE_HOW, figure=FIGURES)
    def reserve_then_commit(self, amount: int, how: str, figure: int) -> object:
        """The usual life of a hold, back to back, so commits are common in every run."""
        hold_id = self.reserve(amount, None)
        if not isinstance(hold_id, str):
            return hold_id
        return self.commit(hold_id, how, figure)

    @rule(hold_id=holds)
    def release(self, hold_id: str) -> None:
        self.view()
        before = self.rows()
        hold = self.hold_models[hold_id]
        kwargs: dict[str, Any] = {"reservation_id": hold_id, "idempotency_key": _key()}
        if hold.resolved:
            self.refused("RESERVATION_NOT_ACTIVE", credits.release_reservation, **kwargs)
            return
        result = self.call(credits.release_reservation, **kwargs)
        after = self.rows()
        if self.hold_expired(hold):
            # Expiry released it already; releasing again is no error and moves nothing.
            assert result.reservation.status is ReservationStatus.EXPIRED
            assert after == before
            return
        hold.resolved = True
        assert result.reservation.status is ReservationStatus.RELEASED
        assert after.held == before.held - hold.amount
        new = after.entries_since(before)
        assert all(e.kind in ("EXPIRY", "VOID") and e.amount < 0 for e in new)
        assert after.balance == before.balance + sum(e.amount for e in new)

    @rule(spend_id=spends, how=st.sampled_from(["all", "part", "too much"]), figure=FIGURES)
    def refund(self, spend_id: str, how: str, figure: int) -> None:
        self.tick()
        self.view()
        before = self.rows()
        left = self.refundable[spend_id]
        amount: int | None = None
        if how == "part" and left > 0:
            amount = 1 + (figure - 1) % left
        elif how != "all" or left == 0:
            amount = left + figure
        kwargs: dict[str, Any] = {
            "entry_id": spend_id,
            "amount": amount,
            "reason": "property",
            "idempotency_key": _key(),
        }
        if how == "too much" or left == 0:
            error = self.refused("REFUND_EXCEEDS_SPEND", credits.refund_spend, **kwargs)
            assert error.metadata["refundable"] == format_amount(left)
            return
        expected = left if amount is None else amount
        entry = self.call(credits.refund_spend, **kwargs).entry
        after = self.rows()
        assert (entry.kind, entry.amount, entry.refunded_entry_id) == (
            EntryKind.REFUND,
            expected,
            spend_id,
        )
        assert sum(c for _, c in entry.buckets) == expected
        assert all(c > 0 for _, c in entry.buckets)
        assert after.entries_since(before) == (
            EntryRow(entry.id, "REFUND", expected, before.balance + expected),
        )
        self.refundable[spend_id] -= expected
        self.refunded += expected

    # -- idempotency -----------------------------------------------------------------------

    @precondition(lambda self: self.last_call is not None)
    @rule(change=st.booleans())
    def repeat_last_call(self, change: bool) -> None:
        assert self.last_call is not None
        use_case, kwargs, first = self.last_call
        self.view()
        if change and "amount" in kwargs:
            altered = {**kwargs, "amount": (kwargs["amount"] or 0) + 1}
            self.refused("IDEMPOTENCY_KEY_REUSED", use_case, **altered)
            return
        before, counts = self.rows(), table_counts(self.engine)
        again = use_case(self.ctx, **kwargs)
        assert again.replayed is True
        assert again.result == first.result
        assert_exact(again.result)
        assert self.rows() == before
        assert table_counts(self.engine) == counts

    # -- time ------------------------------------------------------------------------------

    @rule(by=st.none() | STEPS)
    def advance(self, by: timedelta | None) -> None:
        """Move the clock; by None, land exactly on the next moment a bucket or hold changes
        by time (read from the rows, not from the service's own bookkeeping)."""
        if by is None:
            now = to_micros(self.clock.now())
            later = [t for t in time_events(self.rows()) if t > now]
            by = timedelta(microseconds=min(later) - now) if later else None
        if by is not None:
            self.clock.advance(by)

    @rule(by=STEPS)
    def advance_then_sweep(self, by: timedelta) -> None:
        now = self.clock.advance(by)
        due = self.rows().sweep_due_at
        swept = sweeping.sweep_due_accounts(self.ctx, batch=10_000)
        if due is not None and due <= to_micros(now):
            assert swept >= 1
        after = self.rows()
        gaps_closed(after, now)
        # A second sweep finds nothing, and the balance is then a plain read.
        assert sweeping.sweep_due_accounts(self.ctx, batch=10_000) == 0
        self.view()
        assert self.rows() == after

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        view = self.view()
        rows = self.rows()
        assert_exact(view)
        now = self.clock.now()
        gaps_closed(rows, now)

        # §4.1: balance is the ledger's sum; available is balance minus active holds.
        assert view.balance == rows.balance == ledger_sum(self.engine, self.account_id)
        assert view.held == rows.held
        assert view.available == view.balance - view.held
        # §4.2: a PREPAID account never goes below zero, nor does any bucket.
        assert view.available >= 0
        for b in rows.buckets:
            assert 0 <= b.held <= b.remaining <= b.amount, b
            if b.status == GrantStatus.PENDING.value:
                assert b.held == 0, b
            if b.status in CLOSED:
                assert b.remaining == b.held, b
        assert sum(b.remaining for b in rows.buckets if b.status != "PENDING") == view.balance
        assert sum(b.held for b in rows.buckets) == view.held
        assert sum(h.amount for h in rows.holds if h.status == "ACTIVE") == view.held

        # The view lists, in drain order, every bucket that holds part of the balance: the
        # active ones and the closed ones whose held part a hold still claims.
        assert list(view.buckets) == sorted(view.buckets, key=Bucket.drain_key)
        assert all(b.status is not GrantStatus.PENDING and b.remaining > 0 for b in view.buckets)
        assert sum(b.remaining for b in view.buckets) == view.balance

        # The listed grants are the stored buckets.
        listed: list[Bucket] = []
        token = ""
        while True:
            page = queries.list_grants(
                self.ctx, account_id=self.account_id, size=7, token=token, statuses=[]
            )
            listed.extend(page.items)
            token = page.next_token
            if not token:
                break
        assert_exact(listed)
        assert sorted((b.id, b.status.value, b.remaining, b.held) for b in listed) == [
            (b.id, b.status, b.remaining, b.held) for b in rows.buckets
        ]

        # The ledger is append-only and every balance_after is its running sum.
        assert rows.entries[: len(self.seen_entries)] == self.seen_entries
        self.seen_entries = rows.entries
        running = 0
        totals = dict.fromkeys(("GRANT", "SPEND", "REFUND", "EXPIRY", "VOID"), 0)
        for e in rows.entries:
            running += e.amount
            assert e.balance_after == running, e
            totals[e.kind] += e.amount
            if e.kind in ("EXPIRY", "VOID", "SPEND"):
                assert e.amount < 0, e
            else:
                assert e.amount > 0, e
        assert totals["SPEND"] == -self.spent
        assert totals["REFUND"] == self.refunded
        assert totals["GRANT"] == sum(
            g.amount
            for g in self.granted.values()
            if g.effective_at <= now and not g.voided_while_pending
        )
        assert all(left >= 0 for left in self.refundable.values())


def test_ledger_invariants_hold_for_any_sequence_of_calls(
    database_url: str, engine: Engine, clock: ManualClock, ctx: AppContext
) -> None:
    machine = type(
        "LedgerMachineBound", (LedgerMachine,), {"ctx": ctx, "engine": engine, "clock": clock}
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=40 if database_url.startswith("sqlite") else 25,
            stateful_step_count=25,
            deadline=None,
            report_multiple_bugs=False,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )


def test_listed_buckets_make_up_the_balance_while_a_hold_outlives_its_bucket(
    ctx: AppContext, clock: ManualClock, engine: Engine
) -> None:
    account_id = "outlived"
    accounts.create_account(
        ctx,
        account_id=account_id,
        billing_mode=BillingMode.PREPAID,
        stripe_customer_id="",
        parent_id="",
        low_balance_threshold=None,
        metadata={},
        idempotency_key=_key(),
    )
    credits.grant_credits(
        ctx,
        account_id=account_id,
        amount=10 * MICROS,
        source=GrantSource.PURCHASE,
        priority=None,
        effective_at=None,
        expires_at=clock.now() + timedelta(minutes=5),
        description="",
        metadata={},
        idempotency_key=_key(),
    )
    credits.reserve_credits(
        ctx,
        account_id=account_id,
        amount=4 * MICROS,
        ttl=timedelta(hours=1),
        feature="",
        request_id="",
        metadata={},
        idempotency_key=_key(),
    )
    clock.advance(timedelta(minutes=10))

    view = queries.get_balance(ctx, account_id)

    # The held 4 credits stay valid (DESIGN §3), so they are the balance...
    assert (view.balance, view.held, view.available) == (4 * MICROS, 4 * MICROS, 0)
    assert ledger_sum(engine, account_id) == view.balance
    # ...but no listed bucket carries them.
    assert sum(b.remaining for b in view.buckets) == view.balance
