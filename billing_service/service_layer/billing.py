"""Selling credits: the catalog, Checkout and portal sessions, entitlements and the
subscription mirror as callers read it.

Stripe is called outside any database transaction (a transaction never waits on the network);
what the calls create is made safe to retry by Stripe's own idempotency keys, derived from the
caller's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from billing_service.domain.amounts import format_amount
from billing_service.domain.catalog import CreditPackage, Plan
from billing_service.domain.errors import (
    FailedPrecondition,
    InvalidField,
    NotFound,
    stripe_not_configured,
)
from billing_service.domain.model import Account, BalanceView
from billing_service.domain.purchases import CheckoutOffer
from billing_service.domain.subscriptions import AllowancePeriod, Subscription, SubscriptionStatus
from billing_service.domain.validation import check_id, check_idempotency_key
from billing_service.service_layer.allowances import is_allowance_of, plan_or_none
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.pagination import Page, decode_token, encode_token, page_size
from billing_service.service_layer.ports import CheckoutSession, StripePort
from billing_service.service_layer.queries import get_balance
from billing_service.service_layer.unit_of_work import Tx

MAX_URL = 2048


@dataclass(frozen=True)
class CheckoutResult:
    """A Checkout session and the customer it is for."""

    session: CheckoutSession
    customer_id: str


@dataclass(frozen=True)
class EntitlementsView:
    """What an account may use now."""

    account_id: str
    subscription: Subscription | None
    plan: Plan | None
    period: AllowancePeriod | None
    allowance_remaining: int
    balance: BalanceView


def list_plans(ctx: AppContext, *, include_inactive: bool) -> list[Plan]:
    """The catalog's plans."""
    return ctx.db.read(lambda tx: tx.catalog.plans(include_inactive=include_inactive))


def list_packages(ctx: AppContext, *, include_inactive: bool) -> list[CreditPackage]:
    """The catalog's credit packages."""
    return ctx.db.read(lambda tx: tx.catalog.packages(include_inactive=include_inactive))


def create_checkout_session(
    ctx: AppContext,
    *,
    account_id: str,
    package_id: str,
    plan_id: str,
    success_url: str,
    cancel_url: str,
    idempotency_key: str,
) -> CheckoutResult:
    """Start a Checkout session: a package is a one-time payment, a plan a subscription."""
    check_id(account_id, "account_id")
    check_idempotency_key(idempotency_key)
    _check_url(success_url, "success_url")
    _check_url(cancel_url, "cancel_url")
    if bool(package_id) == bool(plan_id):
        raise InvalidField("item", "give exactly one of package_id and plan_id")
    stripe = _stripe(ctx, "CreateCheckoutSession")
    item_id = package_id or plan_id

    def read(tx: Tx) -> tuple[Account | None, CreditPackage | Plan | None]:
        return tx.accounts.get(account_id), tx.catalog.get(item_id)

    account, item = ctx.db.read(read)
    if account is None:
        raise NotFound("ACCOUNT", "account_id", account_id)
    wanted = CreditPackage if package_id else Plan
    if not isinstance(item, wanted) or not item.active:
        raise NotFound("CATALOG_ITEM", "package_id" if package_id else "plan_id", item_id)
    if not item.stripe_price_id:
        raise FailedPrecondition(
            f"{item_id!r} has no Stripe price yet: run `creditline catalog push`",
            reason="CATALOG_NOT_PUSHED",
            item_id=item_id,
        )
    customer_id = _customer(ctx, stripe, account)
    metadata = {"account_id": account_id}
    if isinstance(item, CreditPackage):
        metadata["package_id"] = item.id
        # For people reading the session in Stripe; the grant reads the offer recorded below.
        metadata["credits"] = format_amount(item.credits)
    else:
        metadata["plan_id"] = item.id
    session = stripe.create_checkout_session(
        customer_id=customer_id,
        price_id=item.stripe_price_id,
        mode="payment" if isinstance(item, CreditPackage) else "subscription",
        metadata=metadata,
        success_url=success_url,
        cancel_url=cancel_url,
        idempotency_key=f"creditline-checkout:{account_id}:{idempotency_key}",
    )
    if isinstance(item, CreditPackage):
        # Before the buyer gets the URL: a session whose offer was not recorded never
        # reaches anyone who could pay it (the caller retries with the same key, and Stripe
        # answers with the same session).
        _record_offer(ctx, session.id, account_id, item)
    return CheckoutResult(session, customer_id)


def _record_offer(ctx: AppContext, session_id: str, account_id: str, item: CreditPackage) -> None:
    """Remember what a package session sells, so its completion grants exactly that: the
    credits on sale now, even if a catalog push changes them while the buyer pays, and never
    what the session's metadata says. A retry finds the first record and keeps it."""
    offer = CheckoutOffer(
        checkout_session_id=session_id,
        account_id=account_id,
        package_id=item.id,
        credits=item.credits,
        stripe_price_id=item.stripe_price_id,
        created_at=ctx.clock.now(),
    )

    def record(tx: Tx) -> None:
        if tx.stripe.checkout_offer(session_id) is None:
            tx.stripe.add_checkout_offer(offer)

    ctx.db.write(record)


def create_portal_session(ctx: AppContext, *, account_id: str, return_url: str) -> str:
    """A customer portal URL for an account with a Stripe customer."""
    check_id(account_id, "account_id")
    _check_url(return_url, "return_url")
    stripe = _stripe(ctx, "CreatePortalSession")
    account = ctx.db.read(lambda tx: tx.accounts.get(account_id))
    if account is None:
        raise NotFound("ACCOUNT", "account_id", account_id)
    if not account.stripe_customer_id:
        raise FailedPrecondition(
            f"account {account_id!r} has no Stripe customer yet (it has never checked out)",
            reason="NO_STRIPE_CUSTOMER",
            account_id=account_id,
        )
    return stripe.create_portal_session(
        customer_id=account.stripe_customer_id, return_url=return_url
    )


def get_entitlements(ctx: AppContext, account_id: str) -> EntitlementsView:
    """An account's current subscription, plan, allowance and balance."""
    check_id(account_id, "account_id")
    balance = get_balance(ctx, account_id)

    def read(tx: Tx) -> tuple[Subscription | None, Plan | None, AllowancePeriod | None]:
        chosen = _current(tx.subscriptions.of_account(account_id))
        if chosen is None:
            return None, None, None
        period = tx.subscriptions.latest_period(chosen.id)
        plan_id = (period.plan_id if period else "") or chosen.stripe_plan_id
        return chosen, plan_or_none(tx, plan_id), period

    subscription, plan, period = ctx.db.read(read)
    remaining = 0
    if subscription is not None:
        remaining = sum(b.remaining for b in balance.buckets if is_allowance_of(b, subscription.id))
    return EntitlementsView(account_id, subscription, plan, period, remaining, balance)


def list_subscriptions(
    ctx: AppContext, *, account_id: str, size: int, token: str
) -> Page[Subscription]:
    """A page of mirrored subscriptions by id."""
    if account_id:
        check_id(account_id, "account_id")
    limit = page_size(size)
    filters = {"account": account_id}
    position = decode_token(token, filters)
    after = str(position[0]) if position else ""
    rows = ctx.db.read(
        lambda tx: tx.subscriptions.page(account_id=account_id, after=after, limit=limit + 1)
    )
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items, encode_token([items[-1].id], filters) if more else "")


def _current(subscriptions: list[Subscription]) -> Subscription | None:
    """The subscription that decides entitlements: a live one, newest first, else the newest."""
    live = [s for s in subscriptions if s.status is not SubscriptionStatus.CANCELED]
    chosen = live or subscriptions
    return chosen[0] if chosen else None


def _stripe(ctx: AppContext, what: str) -> StripePort:
    if ctx.stripe is None:
        raise stripe_not_configured(what)
    return ctx.stripe


def _customer(ctx: AppContext, stripe: StripePort, account: Account) -> str:
    """The account's Stripe customer, created on first use.

    Two first checkouts at once send Stripe the same idempotency key, so they get the same
    customer; the link is written only where none exists.
    """
    if account.stripe_customer_id:
        return account.stripe_customer_id
    created = stripe.create_customer(
        account_id=account.id,
        metadata={"account_id": account.id},
        idempotency_key=f"creditline-customer:{account.id}",
    )

    def link(tx: Tx) -> str:
        tx.accounts.link_stripe_customer(account.id, created)
        found = tx.accounts.get(account.id)
        return found.stripe_customer_id if found else created

    return ctx.db.write(link)


def _check_url(url: str, field: str) -> None:
    if not url:
        raise InvalidField(field, "is required")
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("https", "http") or not parts.netloc:
        raise InvalidField(field, f"must be an http(s) URL of at most {MAX_URL} characters")
