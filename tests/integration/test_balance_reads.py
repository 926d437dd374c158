"""Coalesced balance reads (service_layer/balance_reads.py): calls that arrive while a read is
in flight share the next statement, each gets its own account's answer, an error reaches every
call of its batch, a read never misses a write committed before the call, and an estimate for
an account awaits its balance without holding a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from billing_service.domain.errors import NotFound, Unavailable
from billing_service.domain.pricing import Usage, UsageLine
from billing_service.pricing import price_book_file
from billing_service.service_layer import credits, queries
from billing_service.service_layer.balance_reads import BalanceReads
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.pricing import estimate_cost_async, seed_price_book
from billing_service.service_layer.unit_of_work import Database, Tx
from tests.integration.test_group_commit import c, open_account

# Coalescing is PostgreSQL's (SQLite reads per call): these tests run there only.
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


class GatedDatabase:
    """A Database whose first statement waits for a gate: calls pile up behind it."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine
        self._db = db
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.statements: list[int] = []
        self.fail = False

    def read_statement(self, work: Callable[[Tx], Any]) -> Any:
        self.statements.append(1)
        if len(self.statements) == 1:
            self.entered.set()
            assert self.gate.wait(10)
        if self.fail:
            raise Unavailable("database unavailable")
        return self._db.read_statement(work)


def queued(reads: BalanceReads, db: GatedDatabase) -> int:
    return reads.queued(db)  # type: ignore[arg-type]


def pile_up(reads: BalanceReads, db: GatedDatabase, ids: list[str]) -> list[Any]:
    """The first id leads and is held at the gate; the rest queue; then the gate opens."""

    def read(account_id: str) -> Any:
        try:
            return reads.sums_and_live(db, account_id)  # type: ignore[arg-type]
        except Unavailable as error:
            return error

    with ThreadPoolExecutor(len(ids)) as pool:
        first = pool.submit(read, ids[0])
        assert db.entered.wait(10)
        rest = [pool.submit(read, account_id) for account_id in ids[1:]]
        deadline = time.monotonic() + 10
        while queued(reads, db) < len(ids) - 1 and time.monotonic() < deadline:
            time.sleep(0.001)  # waiting for a condition, with a deadline
        assert queued(reads, db) == len(ids) - 1
        db.gate.set()
        return [first.result(), *(f.result() for f in rest)]


def test_calls_queued_behind_a_read_share_one_statement(ctx: AppContext) -> None:
    for n in range(6):
        open_account(ctx, f"acct-{n}", str(n + 1))
    db = GatedDatabase(ctx.db)
    reads = BalanceReads()
    ids = ["acct-0", "acct-1", "acct-2", "missing", "acct-5", "acct-2", "acct-4"]
    answers = pile_up(reads, db, ids)

    assert len(db.statements) == 2  # the leader's, then one for the six queued behind it
    for account_id, found in zip(ids, answers, strict=True):
        if account_id == "missing":
            assert found is None
            continue
        sums, live = found
        expected = c(str(int(account_id[-1]) + 1))
        assert sums.balance == expected
        assert sum(b.remaining for b in live) == expected
    assert queued(reads, db) == 0


def test_an_error_reaches_every_call_of_its_batch_and_the_next_read_works(
    ctx: AppContext,
) -> None:
    for n in range(3):
        open_account(ctx, f"acct-{n}", "1")
    db = GatedDatabase(ctx.db)
    db.fail = True
    reads = BalanceReads()
    answers = pile_up(reads, db, ["acct-0", "acct-1", "acct-2"])
    assert all(isinstance(a, Unavailable) for a in answers)
    db.fail = False
    sums, _ = reads.sums_and_live(db, "acct-1")  # type: ignore[arg-type, misc]
    assert sums.balance == c("1")


def test_a_balance_read_sees_every_write_committed_before_it(ctx: AppContext) -> None:
    open_account(ctx, "acct", "100")

    def spend_then_read(n: int) -> tuple[int, int]:
        spent = credits.spend_credits(
            ctx,
            account_id="acct",
            amount=c("1"),
            feature="",
            request_id="",
            metadata={},
            idempotency_key=f"spend-{n}",
        )
        return spent.result.available, queries.get_balance(ctx, "acct").balance

    with ThreadPoolExecutor(16) as pool:
        seen = list(pool.map(spend_then_read, range(48)))
    # Balances only fall here: a read that missed its caller's own committed spend would be
    # above what that spend left.
    assert all(read <= after_own_spend for after_own_spend, read in seen)
    assert queries.get_balance(ctx, "acct").balance == c("52")
    with pytest.raises(NotFound):
        queries.get_balance(ctx, "nobody")


class GatedContextDatabase(GatedDatabase):
    """GatedDatabase that also serves the rest of Database (transactions) ungated."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


async def test_estimates_for_accounts_await_their_balance_without_holding_a_thread(
    ctx: AppContext,
) -> None:
    seed_price_book(ctx, price_book_file.read(price_book_file.DEFAULT_PATH))
    ids = ["est-0", "est-1", "est-2"]
    for n, account_id in enumerate(ids):
        open_account(ctx, account_id, str(n + 1))
    db = GatedContextDatabase(ctx.db)
    gated = replace(ctx, db=db, reads=BalanceReads())  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))  # the one thread handlers may borrow
    usage = Usage((UsageLine("openai", "gpt-4o", input_tokens=1000, output_tokens=100),), "")

    with ThreadPoolExecutor(1) as own:
        estimates = [asyncio.create_task(estimate_cost_async(gated, usage, i)) for i in ids]
        assert await loop.run_in_executor(own, db.entered.wait, 10)
        # The first balance read is held at the gate and the others queue behind it, and
        # the thread every handler shares is still free for other work.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 10) == "free"
        db.gate.set()
        results = await asyncio.gather(*estimates)

    assert [r.available for r in results] == [c("1"), c("2"), c("3")]
    assert len({r.cost.total for r in results}) == 1 and results[0].cost.total > 0
    assert len(db.statements) == 2  # the held read, then one for the two queued behind it
