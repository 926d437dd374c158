"""Which price book version account-free estimates use: the process that writes a version sees
it at once; another replica sees it within CREDITLINE_PRICE_BOOK_REFRESH_SECONDS."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from billing_service.domain.clock import ManualClock
from billing_service.domain.pricing import Tier, Usage, UsageLine
from billing_service.pricing import price_book_file
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.price_book_cache import PriceBookCache
from billing_service.service_layer.pricing import (
    estimate_cost,
    estimate_cost_async,
    seed_price_book,
    upsert_tier,
)
from billing_service.service_layer.unit_of_work import Database, Tx

T = TypeVar("T")

USAGE = Usage(
    lines=(UsageLine(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=100),),
    tier="",
)


def version(ctx: AppContext) -> int:
    return estimate_cost(ctx, USAGE, "").cost.version


def test_a_new_version_is_seen_at_once_here_and_after_the_refresh_elsewhere(
    ctx: AppContext, clock: ManualClock
) -> None:
    seed_price_book(ctx, price_book_file.read(price_book_file.DEFAULT_PATH))
    slow_replica = replace(ctx, books=PriceBookCache(refresh_seconds=3600))
    fresh_replica = replace(ctx, books=PriceBookCache(refresh_seconds=0))
    assert version(ctx) == version(slow_replica) == version(fresh_replica) == 1

    tier = Tier(name="TIER_X", base_fee=5_000_000, fee_unit="run", description="")
    upsert_tier(ctx, tier=tier, effective_at=None, idempotency_key="tier-x")

    assert version(ctx) == 2  # the writer forgot its cached list after the commit
    assert version(fresh_replica) == 2  # refresh 0: always asks the database
    assert version(slow_replica) == 1  # within its refresh period it may lag


def test_a_future_version_takes_over_when_its_time_comes_without_a_refresh(
    ctx: AppContext, clock: ManualClock
) -> None:
    seed_price_book(ctx, price_book_file.read(price_book_file.DEFAULT_PATH))
    tier = Tier(name="TIER_Y", base_fee=1_000_000, fee_unit="run", description="")
    later = clock.now().replace(year=clock.now().year + 1)
    upsert_tier(ctx, tier=tier, effective_at=later, idempotency_key="tier-y")
    cached = replace(ctx, books=PriceBookCache(refresh_seconds=3600))
    assert version(cached) == 1
    clock.set(later)
    assert version(cached) == 2


class CountingDatabase:
    """The real database, counting the reads made on the caller's thread and on others."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.engine = db.engine
        self.reads_by_thread: list[str] = []

    def read(self, work: Callable[[Tx], T]) -> T:
        self.reads_by_thread.append(threading.current_thread().name)
        return self._db.read(work)


async def test_coroutine_estimates_touch_the_database_only_off_the_loop_and_when_due(
    ctx: AppContext,
) -> None:
    seed_price_book(ctx, price_book_file.read(price_book_file.DEFAULT_PATH))
    counting = CountingDatabase(ctx.db)
    cached = replace(ctx, db=counting, books=PriceBookCache(refresh_seconds=3600))  # type: ignore[arg-type]
    loop_thread = threading.current_thread().name

    first = await estimate_cost_async(cached, USAGE, "")
    assert counting.reads_by_thread and loop_thread not in counting.reads_by_thread
    reads = len(counting.reads_by_thread)

    again = await estimate_cost_async(cached, USAGE, "")
    assert len(counting.reads_by_thread) == reads  # priced from the cache, on the loop
    assert again == first == estimate_cost(ctx, USAGE, "")

    always = replace(cached, books=PriceBookCache(refresh_seconds=0))
    await estimate_cost_async(always, USAGE, "")
    assert len(counting.reads_by_thread) > reads  # a refresh is due every time: it reads
    assert loop_thread not in counting.reads_by_thread
