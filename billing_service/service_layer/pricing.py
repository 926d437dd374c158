"""Use cases for the charge matrix: estimates, price book versions, tiers and overrides.

Price book versions never change once written, so each process reads a version from the
database once and keeps it (PriceBookCache); only "which version is in force now" is asked
per call. A change is always a new version: copy the newest, apply the change, insert it with
the next number. Writers take turns for that number (PriceBookRepository.lock_versions), so
concurrent changes each build on the one before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

from billing_service.db.price_books import PriceBookInfo
from billing_service.domain.errors import InvalidField, NotFound
from billing_service.domain.ids import new_id
from billing_service.domain.price_rules import (
    check_credit_value,
    check_model,
    check_model_price,
    check_provider,
    check_tier,
)
from billing_service.domain.pricing import (
    Cost,
    HoldPricing,
    ModelPrice,
    PriceBook,
    PriceOverride,
    Tier,
    Usage,
    estimate,
    price_case,
    validate_usage,
)
from billing_service.domain.validation import check_id, check_text
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.idempotency import Outcome, run_idempotent
from billing_service.service_layer.pagination import Page, decode_token, encode_token, page_size
from billing_service.service_layer.price_book_cache import PriceBookCache
from billing_service.service_layer.queries import get_balance, get_balance_async
from billing_service.service_layer.unit_of_work import Tx

DEFAULT_CREDIT_USD = Decimal("0.001")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class EstimateResult:
    """An estimate and, with an account, whether it can pay the maximum."""

    cost: Cost
    available: int | None

    @property
    def covered(self) -> bool:
        """True when the account's available credits cover the maximum."""
        return self.available is not None and self.available >= self.cost.maximum


@dataclass(frozen=True)
class VersionResult:
    """The header of a version a change created."""

    price_book: PriceBookInfo


@dataclass(frozen=True)
class TierResult:
    """A tier as stored and the version it created."""

    tier: Tier
    price_book: PriceBookInfo


@dataclass(frozen=True)
class OverrideResult:
    """An override as stored."""

    override: PriceOverride


def book_in_force(books: PriceBookCache, tx: Tx, at: datetime, version: int = 0) -> PriceBook:
    """The named version, or the one in force at `at` when version is 0."""
    if version < 0:
        raise InvalidField("version", "must be 0 (in force now) or a version number")
    chosen = version or tx.price_books.in_force(at)
    if chosen is None:
        raise NotFound("PRICE_BOOK", "version", "in force")
    return books.get(tx, chosen)


def estimate_cost(ctx: AppContext, usage: Usage, account_id: str) -> EstimateResult:
    """Price usage under the version in force, with the account's overrides if one is named."""
    _check_estimate(usage, account_id)
    now = ctx.clock.now()
    if not account_id:
        return EstimateResult(estimate(ctx.books.in_force(ctx.db, now), usage, [], now), None)
    # The balance as of now (due expiries applied), read before pricing: "covered" is advice
    # for the caller, and the hold that follows checks the balance again under its lock.
    available = get_balance(ctx, account_id).available
    return ctx.db.read(_pricing_for(ctx, usage, account_id, now=now, available=available))


async def estimate_cost_async(ctx: AppContext, usage: Usage, account_id: str) -> EstimateResult:
    """estimate_cost, for a coroutine. An estimate for no account, with the price book in
    force already cached, is priced at once. For an account, the balance is awaited (shared
    with concurrent reads, not holding a thread) and only the price-book read runs off the
    event loop."""
    _check_estimate(usage, account_id)
    now = ctx.clock.now()
    if not account_id:
        book = ctx.books.in_force_cached(now)
        if book is not None:
            return EstimateResult(estimate(book, usage, [], now), None)
        return await asyncio.to_thread(estimate_cost, ctx, usage, account_id)
    available = (await get_balance_async(ctx, account_id)).available
    read = _pricing_for(ctx, usage, account_id, now=now, available=available)
    return await asyncio.to_thread(ctx.db.read, read)


def _check_estimate(usage: Usage, account_id: str) -> None:
    validate_usage(usage, "usage", actual=False)
    if account_id:
        check_id(account_id, "account_id")


def _pricing_for(
    ctx: AppContext, usage: Usage, account_id: str, *, now: datetime, available: int
) -> Callable[[Tx], EstimateResult]:
    """The read that prices usage for an account under the book in force at now."""

    def read(tx: Tx) -> EstimateResult:
        book = book_in_force(ctx.books, tx, now)
        overrides = tx.price_books.overrides_for(account_id)
        return EstimateResult(estimate(book, usage, overrides, now), available)

    return read


def price_hold(
    books: PriceBookCache, tx: Tx, account_id: str, usage: Usage, now: datetime
) -> HoldPricing:
    """Pin the version in force and the account's overrides, and price usage at its maximum."""
    validate_usage(usage, "estimate", actual=False)
    book = book_in_force(books, tx, now)
    overrides = tuple(tx.price_books.overrides_for(account_id))
    cost = price_case(book, usage, overrides, now, field="estimate", case="maximum")
    return HoldPricing(book.version, usage, overrides, now, cost)


def price_actual(
    books: PriceBookCache,
    tx: Tx,
    *,
    pinned: HoldPricing | None,
    account_id: str,
    made_at: datetime,
    usage: Usage,
) -> Cost:
    """Price actual usage as the hold was priced: its pinned version and overrides, or, for a
    hold sized by amount, the version and overrides in force when it was made."""
    validate_usage(usage, "actual_usage", actual=True)
    if pinned is None:
        book = book_in_force(books, tx, made_at)
        overrides: Sequence[PriceOverride] = tx.price_books.overrides_for(account_id)
        at = made_at
    else:
        book, overrides, at = books.get(tx, pinned.version), pinned.overrides, pinned.priced_at
    return price_case(book, usage, overrides, at, field="actual_usage", case="expected")


def list_price_books(ctx: AppContext, *, size: int, token: str) -> Page[PriceBookInfo]:
    """Version headers, newest first."""
    limit = page_size(size)
    position = decode_token(token, {})
    before = int(position[0]) if position else None
    rows = ctx.db.read(lambda tx: tx.price_books.page(before=before, limit=limit + 1))
    items = rows[:limit]
    return Page(items, encode_token([items[-1].version], {}) if len(rows) > limit else "")


def list_model_prices(
    ctx: AppContext, *, version: int, provider: str, size: int, token: str
) -> tuple[Page[ModelPrice], PriceBook]:
    """One version's prices by provider and model, optionally one provider's."""
    limit = page_size(size)
    if provider:
        check_provider(provider, "provider")
    book = ctx.db.read(lambda tx: book_in_force(ctx.books, tx, ctx.clock.now(), version))
    filters = {"version": book.version, "provider": provider}
    position = decode_token(token, filters)
    after = (str(position[0]), str(position[1])) if position else ("", "")
    matching = [
        m
        for m in book.models
        if (not provider or m.provider == provider) and (m.provider, m.model) > after
    ]
    items = matching[:limit]
    more = len(matching) > limit
    next_token = encode_token([items[-1].provider, items[-1].model], filters) if more else ""
    return Page(items, next_token), book


def get_model_price(
    ctx: AppContext, *, provider: str, model: str, version: int
) -> tuple[ModelPrice, PriceBook]:
    """One model's price in one version."""
    check_provider(provider, "provider")
    check_model(model, "model")
    book = ctx.db.read(lambda tx: book_in_force(ctx.books, tx, ctx.clock.now(), version))
    return book.model(provider, model), book


def get_price_book(ctx: AppContext, version: int) -> PriceBook:
    """A whole version: the named one, or the one in force now when version is 0."""
    return ctx.db.read(lambda tx: book_in_force(ctx.books, tx, ctx.clock.now(), version))


def upsert_model_prices(
    ctx: AppContext,
    *,
    prices: Sequence[ModelPrice],
    effective_at: datetime | None,
    credit_usd: Decimal | None,
    markup: Decimal | None,
    note: str,
    idempotency_key: str,
) -> Outcome[VersionResult]:
    """A new version with these prices added or replaced."""
    if not prices and credit_usd is None and markup is None:
        raise InvalidField("prices", "must name at least one price, or a new credit_usd or markup")
    if len(prices) > 1000:
        raise InvalidField("prices", "must have at most 1000 prices")
    for i, price in enumerate(prices):
        check_model_price(price, f"prices[{i}]")
    check_credit_value(credit_usd, markup)
    check_text(note, "note")

    def change(base: PriceBook, version: int, now: datetime) -> PriceBook:
        return base.with_changes(
            version=version,
            effective_at=effective_at or now,
            created_at=now,
            note=note,
            models=prices,
            credit_usd=credit_usd,
            markup=markup,
        )

    outcome = run_idempotent(
        ctx.db,
        ctx.clock,
        operation="UpsertModelPrices",
        key=idempotency_key,
        request={
            "prices": list(prices),
            "effective_at": effective_at,
            "credit_usd": credit_usd,
            "markup": markup,
            "note": note,
        },
        result_type=VersionResult,
        work=lambda tx, now: VersionResult(_new_version(ctx, tx, now, change)),
    )
    ctx.books.forget_versions()  # after the commit: the new version is visible
    return outcome


def upsert_tier(
    ctx: AppContext,
    *,
    tier: Tier,
    effective_at: datetime | None,
    idempotency_key: str,
) -> Outcome[TierResult]:
    """A new version with this tier added or replaced."""
    check_tier(tier, "tier")

    def change(base: PriceBook, version: int, now: datetime) -> PriceBook:
        return base.with_changes(
            version=version,
            effective_at=effective_at or now,
            created_at=now,
            note=f"tier {tier.name}",
            tiers=[tier],
        )

    outcome = run_idempotent(
        ctx.db,
        ctx.clock,
        operation="UpsertTier",
        key=idempotency_key,
        request={"tier": tier, "effective_at": effective_at},
        result_type=TierResult,
        work=lambda tx, now: TierResult(tier, _new_version(ctx, tx, now, change)),
    )
    ctx.books.forget_versions()  # after the commit: the new version is visible
    return outcome


def load_price_book(
    ctx: AppContext,
    *,
    book: PriceBook,
    effective_at: datetime | None,
    idempotency_key: str,
) -> Outcome[VersionResult]:
    """A new version that is exactly the given book (a loaded file), numbered next, in force
    from effective_at or from now. The book's own times are ignored."""

    def replace_all(_base: PriceBook, version: int, now: datetime) -> PriceBook:
        return PriceBook(
            version=version,
            effective_at=effective_at or now,
            credit_usd=book.credit_usd,
            markup=book.markup,
            note=book.note,
            created_at=now,
            models=book.models,
            tiers=book.tiers,
        )

    outcome = run_idempotent(
        ctx.db,
        ctx.clock,
        operation="LoadPriceBook",
        key=idempotency_key,
        request={
            "book": replace(book, effective_at=_EPOCH, created_at=_EPOCH),
            "effective_at": effective_at,
        },
        result_type=VersionResult,
        work=lambda tx, now: VersionResult(_new_version(ctx, tx, now, replace_all)),
    )
    ctx.books.forget_versions()  # after the commit: the new version is visible
    return outcome


def seed_price_book(ctx: AppContext, book: PriceBook) -> bool:
    """Write book as version 1, in force since the epoch, if there is no version yet."""

    now = ctx.clock.now()

    def seed(tx: Tx) -> bool:
        if tx.price_books.newest() is not None:
            return False
        tx.price_books.add(
            PriceBook(
                version=1,
                effective_at=_EPOCH,
                credit_usd=book.credit_usd,
                markup=book.markup,
                note=book.note or "the shipped default price book",
                created_at=now,
                models=book.models,
                tiers=book.tiers,
            )
        )
        return True

    seeded = ctx.db.write(seed)
    ctx.books.forget_versions()
    return seeded


def set_account_price_override(
    ctx: AppContext,
    *,
    account_id: str,
    provider: str,
    model: str,
    fixed: ModelPrice | None,
    discount_percent: Decimal | None,
    effective_at: datetime | None,
    expires_at: datetime | None,
    idempotency_key: str,
) -> Outcome[OverrideResult]:
    """Set a fixed price or a discount for one account and model."""
    check_id(account_id, "override.account_id")
    check_provider(provider, "override.provider")
    check_model(model, "override.model")
    if (fixed is None) == (discount_percent is None):
        raise InvalidField("override", "must set exactly one of fixed_price or discount_percent")
    if fixed is not None:
        if model == "*":
            raise InvalidField("override.model", "a fixed price needs one model, not '*'")
        fixed = check_model_price(
            replace(fixed, provider=provider, model=model), "override.fixed_price"
        )
    if effective_at and expires_at and expires_at <= effective_at:
        raise InvalidField("override.expire_time", "must be later than effective_time")

    def work(tx: Tx, now: datetime) -> OverrideResult:
        if tx.accounts.get_sums(account_id) is None:
            raise NotFound("ACCOUNT", "account_id", account_id)
        if expires_at is not None and expires_at <= now:
            raise InvalidField("override.expire_time", "must be in the future")
        book = book_in_force(ctx.books, tx, now)
        if model == "*":
            if not any(m.provider == provider for m in book.models):
                raise NotFound("MODEL", "model", f"{provider}/*")
        elif fixed is None:
            book.model(provider, model)
        override = PriceOverride(
            id=new_id("ovr"),
            account_id=account_id,
            provider=provider,
            model=model,
            fixed=fixed,
            discount_percent=discount_percent,
            effective_at=effective_at or now,
            expires_at=expires_at,
            created_at=now,
        )
        tx.price_books.add_override(override)
        return OverrideResult(override)

    return run_idempotent(
        ctx.db,
        ctx.clock,
        operation="SetAccountPriceOverride",
        key=idempotency_key,
        request={
            "account_id": account_id,
            "provider": provider,
            "model": model,
            "fixed": fixed,
            "discount_percent": discount_percent,
            "effective_at": effective_at,
            "expires_at": expires_at,
        },
        result_type=OverrideResult,
        work=work,
    )


def list_account_price_overrides(ctx: AppContext, account_id: str) -> list[PriceOverride]:
    """An account's overrides, newest first."""
    check_id(account_id, "account_id")

    def read(tx: Tx) -> list[PriceOverride]:
        if tx.accounts.get_sums(account_id) is None:
            raise NotFound("ACCOUNT", "account_id", account_id)
        return tx.price_books.overrides_for(account_id)

    return ctx.db.read(read)


def _new_version(
    ctx: AppContext,
    tx: Tx,
    now: datetime,
    change: Callable[[PriceBook, int, datetime], PriceBook],
) -> PriceBookInfo:
    tx.price_books.lock_versions()
    newest = tx.price_books.newest()
    base = (
        ctx.books.get(tx, newest)
        if newest is not None
        else PriceBook(0, _EPOCH, DEFAULT_CREDIT_USD, Decimal(0), "", now, (), ())
    )
    book = change(base, (newest or 0) + 1, now)
    tx.price_books.add(book)
    return PriceBookInfo(
        version=book.version,
        effective_at=book.effective_at,
        credit_usd=book.credit_usd,
        markup=book.markup,
        note=book.note,
        created_at=book.created_at,
        model_count=len(book.models),
        tier_count=len(book.tiers),
    )
