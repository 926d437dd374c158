"""Group commit across accounts: one flush of writes on several accounts gives every write the
outcome it would have alone, in arrival order, and writes each account's ledger and sums."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from sqlalchemy import Engine

from billing_service.domain.amounts import parse_amount
from billing_service.domain.errors import (
    FailedPrecondition,
    IdempotencyKeyReused,
    InsufficientCredits,
    NotFound,
    Unavailable,
)
from billing_service.domain.model import BillingMode, EntryContext, GrantSource
from billing_service.service_layer import accounts, credits, queries
from billing_service.service_layer.books import OpenBook
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.group_commit import GroupCommitter, PendingWrite, apply_batch
from billing_service.service_layer.idempotency import Outcome, fingerprint
from billing_service.service_layer.results import SpendResult
from tests.helpers import ledger_sum


def c(text: str) -> int:
    return parse_amount(text, "amount")


def open_account(ctx: AppContext, account_id: str, amount: str) -> None:
    accounts.create_account(
        ctx,
        account_id=account_id,
        billing_mode=BillingMode.PREPAID,
        stripe_customer_id="",
        parent_id="",
        low_balance_threshold=None,
        metadata={},
        idempotency_key=f"create-{account_id}",
    )
    credits.grant_credits(
        ctx,
        account_id=account_id,
        amount=c(amount),
        source=GrantSource.PURCHASE,
        priority=None,
        effective_at=None,
        expires_at=None,
        description="",
        metadata={},
        idempotency_key=f"grant-{account_id}",
    )


def pending(account_id: str, amount: str, key: str) -> PendingWrite[SpendResult]:
    context = EntryContext(idempotency_key=key)
    request = {"account_id": account_id, "amount": c(amount), "context": context}

    def apply(_tx: object, opened: OpenBook, _now: object) -> SpendResult:
        return SpendResult(opened.book.spend(c(amount), context), opened.book.available)

    def alone() -> Outcome[SpendResult]:
        raise AssertionError("the batch must not fall back to single spends")

    return PendingWrite(
        "SpendCredits",
        account_id,
        "",
        key,
        fingerprint("SpendCredits", request),
        SpendResult,
        apply,  # type: ignore[arg-type]
        alone,
    )


def test_one_flush_over_many_accounts_settles_each_spend_in_arrival_order(
    ctx: AppContext, engine: Engine
) -> None:
    for account_id, amount in (("b", "10"), ("a", "10"), ("c", "1")):
        open_account(ctx, account_id, amount)
    batch = [
        pending("b", "4", "k1"),
        pending("a", "6", "k2"),
        pending("b", "7", "k3"),  # 6 left on b after k1: refused, changes nothing
        pending("b", "6", "k4"),  # still 6 left: paid
        pending("nobody", "1", "k5"),
        pending("a", "6", "k2"),  # the same key and request: a replay of k2
        pending("c", "1", "k2"),  # the same key, another request: refused
        pending("c", "1", "k6"),
    ]
    results = ctx.db.write(lambda tx: apply_batch(tx, ctx.clock, batch))

    assert isinstance(results[0], Outcome) and results[0].result.available == c("6")
    assert isinstance(results[1], Outcome) and not results[1].replayed
    assert isinstance(results[2], InsufficientCredits)
    assert isinstance(results[3], Outcome) and results[3].result.available == 0
    assert isinstance(results[4], NotFound)
    assert isinstance(results[5], Outcome) and results[5].replayed
    assert results[5].result == results[1].result
    assert isinstance(results[6], IdempotencyKeyReused)
    assert isinstance(results[7], Outcome)
    for account_id, left in (("a", "4"), ("b", "0"), ("c", "0")):
        view = queries.get_balance(ctx, account_id)
        assert view.balance == (c(left) if left != "0" else 0)
        assert ledger_sum(engine, account_id) == view.balance


@pytest.mark.parametrize("lanes", [1, 3])
def test_concurrent_spends_on_many_accounts_through_the_lanes(
    ctx: AppContext, engine: Engine, lanes: int
) -> None:
    names = [f"acct-{n}" for n in range(12)]
    for name in names:
        open_account(ctx, name, "5")
    batcher = GroupCommitter(lanes)
    barrier = threading.Barrier(48)

    def spend(n: int) -> str:
        barrier.wait()
        account_id = names[n % len(names)]
        item = pending(account_id, "2", f"spend-{n}")
        item.alone = lambda: credits.spend_credits(  # a failed batch retries alone
            ctx,
            account_id=account_id,
            amount=c("2"),
            feature="",
            request_id="",
            metadata={},
            idempotency_key=f"spend-{n}",
        )
        try:
            batcher.submit(ctx.db, ctx.clock, item)
        except InsufficientCredits:
            return "refused"
        return "paid"

    with ThreadPoolExecutor(48) as pool:
        outcomes = list(pool.map(spend, range(48)))
    # Four spends of 2 per account of 5: two are paid, two refused, on every account.
    assert outcomes.count("paid") == 24 and outcomes.count("refused") == 24
    for name in names:
        assert queries.get_balance(ctx, name).balance == c("1") == ledger_sum(engine, name)


class UnreachableDatabase:
    """A Database whose every transaction fails as an unreachable database does."""

    def __init__(self) -> None:
        self.attempts = 0

    def write(self, _work: object) -> object:
        self.attempts += 1
        raise Unavailable("database unavailable")


def test_an_unreachable_database_fails_the_whole_batch_at_once(ctx: AppContext) -> None:
    database = UnreachableDatabase()
    committer = GroupCommitter()
    alone_calls: list[str] = []
    barrier = threading.Barrier(8)

    def spend(n: int) -> str:
        item = pending(f"acct-{n}", "1", f"down-{n}")
        item.alone = lambda: alone_calls.append(item.key)  # type: ignore[assignment, func-returns-value]
        barrier.wait()
        try:
            committer.submit(database, ctx.clock, item)  # type: ignore[arg-type]
        except Unavailable:
            return "unavailable"
        return "applied"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(spend, range(8)))
    assert outcomes == ["unavailable"] * 8
    assert alone_calls == []  # nobody waited for the database once per call
    assert database.attempts <= 8


class Capture:
    """A committer that keeps what it is given instead of running it (to build a batch)."""

    def __init__(self) -> None:
        self.items: list[PendingWrite[object]] = []

    def submit(self, _db: object, _clock: object, item: PendingWrite[object]) -> None:
        self.items.append(item)


def batched(ctx: AppContext, calls: list[Callable[[AppContext], object]]) -> list[PendingWrite]:
    capture = Capture()
    captured = replace(ctx, writes=capture)  # type: ignore[arg-type]
    for call in calls:
        call(captured)
    return capture.items  # type: ignore[return-value]


def test_holds_settled_twice_in_one_flush_are_settled_once(ctx: AppContext, engine: Engine) -> None:
    open_account(ctx, "a", "10")
    open_account(ctx, "b", "10")
    holds = [
        credits.reserve_credits(
            ctx,
            account_id=account_id,
            amount=c("4"),
            ttl=None,
            feature="",
            request_id="",
            metadata={},
            idempotency_key=f"hold-{account_id}",
        ).result.reservation.id
        for account_id in ("a", "b")
    ]
    batch = batched(
        ctx,
        [
            lambda x: credits.commit_reservation(
                x, reservation_id=holds[0], amount=c("3"), idempotency_key="commit-1"
            ),
            lambda x: credits.release_reservation(
                x, reservation_id=holds[1], idempotency_key="release-1"
            ),
            # Other keys for the same holds, in the same flush: they must see the first
            # settlements, not the holds as they were read at the start of the flush.
            lambda x: credits.commit_reservation(
                x, reservation_id=holds[0], amount=c("4"), idempotency_key="commit-2"
            ),
            lambda x: credits.commit_reservation(
                x, reservation_id=holds[1], amount=c("1"), idempotency_key="commit-3"
            ),
            lambda x: credits.release_reservation(
                x, reservation_id="rsv_missing", idempotency_key="release-2"
            ),
        ],
    )
    results = ctx.db.write(lambda tx: apply_batch(tx, ctx.clock, batch))

    assert isinstance(results[0], Outcome)
    assert isinstance(results[1], Outcome)
    assert isinstance(results[2], FailedPrecondition)
    assert results[2].reason == "RESERVATION_NOT_ACTIVE"
    assert isinstance(results[3], FailedPrecondition)
    assert isinstance(results[4], NotFound)
    for account_id, balance in (("a", "7"), ("b", "10")):
        view = queries.get_balance(ctx, account_id)
        assert (view.balance, view.held) == (c(balance), 0)
        assert ledger_sum(engine, account_id) == view.balance


async def test_coroutines_and_threads_share_flushes_on_one_account(
    ctx: AppContext, engine: Engine
) -> None:
    """The server's coroutine handlers and in-process callers (threads) queue together."""
    open_account(ctx, "hot", "30")

    def request(key: str) -> dict[str, object]:
        return {
            "account_id": "hot",
            "amount": c("1"),
            "feature": "",
            "request_id": "",
            "metadata": {},
            "idempotency_key": key,
        }

    async def by_coroutine(n: int) -> str:
        try:
            await credits.spend_credits.run_async(ctx, **request(f"co-{n}"))  # type: ignore[arg-type]
        except InsufficientCredits:
            return "refused"
        return "paid"

    def by_thread(n: int) -> str:
        try:
            credits.spend_credits(ctx, **request(f"th-{n}"))  # type: ignore[arg-type]
        except InsufficientCredits:
            return "refused"
        return "paid"

    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(by_coroutine(n) for n in range(20)),
            *(asyncio.to_thread(by_thread, n) for n in range(20)),
        ),
        60,
    )
    # Forty spends of 1 from 30: thirty are paid, ten refused, and nothing else moved.
    assert outcomes.count("paid") == 30 and outcomes.count("refused") == 10
    assert queries.get_balance(ctx, "hot").balance == 0 == ledger_sum(engine, "hot")

    paid = next(n for n, o in enumerate(outcomes[:20]) if o == "paid")
    again = await credits.spend_credits.run_async(ctx, **request(f"co-{paid}"))  # type: ignore[arg-type]
    assert again.replayed
    assert queries.get_balance(ctx, "hot").balance == 0


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_flush_of_replays_and_refusals_leaves_the_account_row_alone(
    ctx: AppContext, engine: Engine
) -> None:
    """PostgreSQL gives an updated row a new xmin even when no value changed: it must not move."""
    open_account(ctx, "a", "5")

    def row_version() -> str:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT xmin FROM accounts WHERE id = 'a'").scalar())

    def spend(amount: str, key: str) -> object:
        try:
            return credits.spend_credits(
                ctx,
                account_id="a",
                amount=c(amount),
                feature="",
                request_id="",
                metadata={},
                idempotency_key=key,
            )
        except InsufficientCredits as refused:
            return refused

    spend("2", "paid")
    before = row_version()
    assert isinstance(spend("9", "refused"), InsufficientCredits)
    replay = spend("2", "paid")
    assert isinstance(replay, Outcome) and replay.replayed
    assert row_version() == before  # nothing moved, nothing written
    spend("1", "paid-again")
    assert row_version() != before  # a real spend does write it
    assert queries.get_balance(ctx, "a").balance == c("2") == ledger_sum(engine, "a")
