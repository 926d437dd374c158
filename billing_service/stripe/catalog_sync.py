"""Catalog sync with Stripe: push packages and plans as Products and Prices, pull them back.

Each catalog item is sold as one Product with a caller-chosen id (`creditline_<item id>`) and
one active Price found by the item's lookup key. The price carries what Creditline needs to
grant credits from Stripe's events alone, in its metadata:

    includedCredits   the credits one unit grants (a package) or grants monthly (a plan), "400"
    creditline_id     the catalog item's id
    creditline_kind   "package" or "plan"
    renewalPolicy     RESET | ROLLOVER | ADD (plans only)
    rolloverCap       the ROLLOVER cap in credits (plans that have one)

Push is idempotent: an item whose product and price already match changes nothing (not even a
request that writes). Stripe prices cannot change their amount or interval, so a price that
differs is replaced: a new price takes over the lookup key (`transfer_lookup_key`) and the old
one is deactivated; subscriptions already on the old price keep it until they change plan.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import stripe
from stripe.params import PriceCreateParams

from billing_service.domain.amounts import format_amount, parse_amount
from billing_service.domain.catalog import (
    CatalogItem,
    CreditPackage,
    Interval,
    Plan,
    RenewalPolicy,
    check_item,
)
from billing_service.domain.errors import FailedPrecondition, InvalidField
from billing_service.stripe.errors import domain_error, is_missing, translated

Progress = Callable[[str], None]
"""Receives one human-readable line per catalog item synced."""

INCLUDED_CREDITS = "includedCredits"
CREDITLINE_ID = "creditline_id"
CREDITLINE_KIND = "creditline_kind"
RENEWAL_POLICY = "renewalPolicy"
ROLLOVER_CAP = "rolloverCap"
# The price metadata push owns; other keys someone set by hand are left alone.
MANAGED_METADATA = (INCLUDED_CREDITS, CREDITLINE_ID, CREDITLINE_KIND, RENEWAL_POLICY, ROLLOVER_CAP)
PRODUCT_ID_PREFIX = "creditline_"
# Stripe takes at most 10 lookup keys in one list request.
_LOOKUP_KEYS_PER_LIST = 10

_STRIPE_INTERVAL: dict[Interval, Literal["month", "year"]] = {
    Interval.MONTH: "month",
    Interval.YEAR: "year",
}
_INTERVAL_FROM_STRIPE: dict[str, Interval] = {
    stripe_name: interval for interval, stripe_name in _STRIPE_INTERVAL.items()
}


class Change(StrEnum):
    """What push did to one Stripe object."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class PushedItem:
    """What push did for one catalog item, and the Stripe ids it is now sold at.

    `price` is UPDATED when the old price differed and was replaced by a new one
    (`replaced_price_id`, now inactive).
    """

    item_id: str
    kind: Literal["package", "plan"]
    product_id: str
    price_id: str
    product: Change
    price: Change
    replaced_price_id: str = ""

    @property
    def change(self) -> Change:
        """The item's change as a whole: a new price, a replaced price or renamed product, or
        nothing."""
        if self.price is Change.CREATED:
            return Change.CREATED
        if self.price is Change.UNCHANGED and self.product is Change.UNCHANGED:
            return Change.UNCHANGED
        return Change.UPDATED


@dataclass(frozen=True)
class PushReport:
    """What one push did, item by item, in the order pushed."""

    items: tuple[PushedItem, ...]

    @property
    def created(self) -> tuple[PushedItem, ...]:
        """Items that got their first price."""
        return self._with(Change.CREATED)

    @property
    def updated(self) -> tuple[PushedItem, ...]:
        """Items whose price was replaced or whose product was renamed or reactivated."""
        return self._with(Change.UPDATED)

    @property
    def unchanged(self) -> tuple[PushedItem, ...]:
        """Items Stripe already had exactly."""
        return self._with(Change.UNCHANGED)

    def _with(self, change: Change) -> tuple[PushedItem, ...]:
        return tuple(item for item in self.items if item.change is change)


@dataclass(frozen=True)
class _WantedPrice:
    product: str
    unit_amount: int
    currency: str
    interval: Literal["month", "year"] | None
    metadata: dict[str, str]


def push(
    stripe_client: stripe.StripeClient, items: Sequence[CatalogItem], *, progress: Progress
) -> PushReport:
    """Make Stripe sell every item: its product and its price, created or brought up to date.

    Raises StripeUnavailable or FailedPrecondition (see billing_service.stripe.errors); the
    items pushed before the failure stay pushed, and running push again finishes the rest.
    """
    report = PushReport(tuple(_push_item(stripe_client, item, progress) for item in items))
    _confirm_on_sale(stripe_client, items, report)
    return report


def _confirm_on_sale(
    client: stripe.StripeClient, items: Sequence[CatalogItem], report: PushReport
) -> None:
    """Check that every pushed price is active and holds its item's lookup key, so the
    database is never pointed at a price that is not on sale (the key may have moved
    meanwhile: a price edited by hand, or a push by a release without the catalog lock)."""
    keys = {item.id: item.lookup_key for item in items}
    holders: dict[str, stripe.Price] = {}
    wanted = list(keys.values())
    for start in range(0, len(wanted), _LOOKUP_KEYS_PER_LIST):
        chunk = wanted[start : start + _LOOKUP_KEYS_PER_LIST]
        with translated("checking the pushed prices"):
            found = client.v1.prices.list(params={"lookup_keys": chunk, "limit": 100})
        holders.update({price.lookup_key: price for price in found.data if price.lookup_key})
    for pushed in report.items:
        holder = holders.get(keys[pushed.item_id])
        if holder is None or holder.id != pushed.price_id or not holder.active:
            raise FailedPrecondition(
                f"{pushed.item_id}: the price this push made ({pushed.price_id}) is no longer the "
                "one on sale; it was changed meanwhile (by hand, or by a push of an older "
                "release). Nothing was written to the database: run the push again",
                reason="CATALOG_PUSH_RACED",
                item_id=pushed.item_id,
            )


def pull(stripe_client: stripe.StripeClient, *, progress: Progress) -> list[CatalogItem]:
    """The catalog Stripe sells: every active price carrying includedCredits metadata, as an
    item with its Stripe ids, packages first, then plans, each by id.

    A price that cannot be a catalog item (no fixed amount, a weekly interval, metadata that
    does not parse) is skipped and named in a progress line. When two active prices claim the
    same item, the one holding a lookup key wins.
    """
    found: dict[str, CatalogItem] = {}
    keyed: dict[str, bool] = {}
    with translated("listing prices"):
        prices = stripe_client.v1.prices.list(
            params={"active": True, "expand": ["data.product"], "limit": 100}
        )
        for price in prices.auto_paging_iter():
            if INCLUDED_CREDITS not in _metadata(price):
                continue
            try:
                item = _item_from_price(price)
            except InvalidField as error:
                progress(f"skipped price {price.id}: {error.field} {error.problem}")
                continue
            has_key = price.lookup_key is not None
            earlier = found.get(item.id)
            if earlier is not None:
                kept, dropped = (
                    (earlier, item) if keyed[item.id] or not has_key else (item, earlier)
                )
                progress(
                    f"skipped price {dropped.stripe_price_id}: {_kind(item)} {item.id} is "
                    f"already sold at price {kept.stripe_price_id}"
                )
                if kept is earlier:
                    continue
            found[item.id] = item
            keyed[item.id] = has_key
    items = sorted(found.values(), key=lambda item: (isinstance(item, Plan), item.id))
    for item in items:
        progress(f"pulled price {item.stripe_price_id} as {_kind(item)} {item.id}")
    return items


def product_id_for(item: CatalogItem) -> str:
    """The id of the Stripe product an item is sold under."""
    return f"{PRODUCT_ID_PREFIX}{item.id}"


def _push_item(client: stripe.StripeClient, item: CatalogItem, progress: Progress) -> PushedItem:
    kind = _kind(item)
    product_id, product_change = _ensure_product(client, item)
    wanted = _wanted_price(item, product_id)
    with translated(f"looking up the price of {kind} {item.id}"):
        existing = client.v1.prices.list(params={"lookup_keys": [item.lookup_key], "limit": 1}).data
    old = existing[0] if existing else None
    differences = [] if old is None else _differences(old, wanted)
    if old is not None and not differences:
        pushed = PushedItem(item.id, kind, product_id, old.id, product_change, Change.UNCHANGED)
    else:
        price_id = _create_price(client, item, wanted, replacing=old.id if old else "")
        if old is not None and old.active:
            with translated(f"deactivating price {old.id} of {kind} {item.id}"):
                client.v1.prices.update(old.id, params={"active": False})
        pushed = PushedItem(
            item.id,
            kind,
            product_id,
            price_id,
            product_change,
            Change.CREATED if old is None else Change.UPDATED,
            replaced_price_id="" if old is None else old.id,
        )
    progress(_describe(pushed, differences))
    _retire_strays(client, item, pushed.price_id, progress)
    return pushed


def _retire_strays(
    client: stripe.StripeClient, item: CatalogItem, keep: str, progress: Progress
) -> None:
    """Deactivate the item's other active prices: a push stopped between creating a
    replacement and deactivating the old price leaves the old one on sale. The price holding
    the lookup key is never touched (a concurrent push may have just created it), nor is a
    price push did not make (one without this item's creditline_id metadata)."""
    kind, product_id = _kind(item), product_id_for(item)
    with translated(f"listing the active prices of {kind} {item.id}"):
        active = list(
            client.v1.prices.list(
                params={"product": product_id, "active": True, "limit": 100}
            ).auto_paging_iter()
        )
    for price in active:
        if price.id == keep or price.lookup_key == item.lookup_key:
            continue
        if _metadata(price).get(CREDITLINE_ID) != item.id:
            continue  # a price someone added by hand (another currency, a promotion): theirs
        with translated(f"deactivating stray price {price.id} of {kind} {item.id}"):
            client.v1.prices.update(price.id, params={"active": False})
        progress(f"deactivated stray price {price.id} of {kind} {item.id} (kept {keep})")


def _ensure_product(client: stripe.StripeClient, item: CatalogItem) -> tuple[str, Change]:
    product_id = product_id_for(item)
    doing = f"reading product {product_id}"
    try:
        product = client.v1.products.retrieve(product_id)
    except stripe.StripeError as error:
        if not is_missing(error):
            raise domain_error(error, doing) from error
        with translated(f"creating product {product_id}"):
            client.v1.products.create(
                params={
                    "id": product_id,
                    "name": item.name,
                    "metadata": {CREDITLINE_ID: item.id},
                }
            )
        return product_id, Change.CREATED
    if product.name == item.name and product.active:
        return product_id, Change.UNCHANGED
    with translated(f"updating product {product_id}"):
        client.v1.products.update(product_id, params={"name": item.name, "active": True})
    return product_id, Change.UPDATED


def _wanted_price(item: CatalogItem, product_id: str) -> _WantedPrice:
    metadata = {CREDITLINE_ID: item.id, CREDITLINE_KIND: _kind(item)}
    if isinstance(item, CreditPackage):
        metadata[INCLUDED_CREDITS] = format_amount(item.credits)
        interval = None
    else:
        metadata[INCLUDED_CREDITS] = format_amount(item.monthly_credits)
        metadata[RENEWAL_POLICY] = item.renewal_policy.value
        if item.rollover_cap is not None:
            metadata[ROLLOVER_CAP] = format_amount(item.rollover_cap)
        interval = _STRIPE_INTERVAL[item.interval]
    return _WantedPrice(product_id, item.unit_amount, item.currency, interval, metadata)


def _differences(price: stripe.Price, wanted: _WantedPrice) -> list[str]:
    """What makes an existing price unfit to sell the item, e.g. "unit_amount 3900 -> 4900"."""
    found: dict[str, object] = {
        "active": price.active,
        "product": _id_of(price.product),
        "unit_amount": price.unit_amount,
        "currency": price.currency,
        "interval": _interval_of(price),
        **{key: _metadata(price).get(key) for key in MANAGED_METADATA},
    }
    want: dict[str, object] = {
        "active": True,
        "product": wanted.product,
        "unit_amount": wanted.unit_amount,
        "currency": wanted.currency,
        "interval": wanted.interval,
        **{key: wanted.metadata.get(key) for key in MANAGED_METADATA},
    }
    return [f"{key} {found[key]} -> {want[key]}" for key in want if found[key] != want[key]]


def _create_price(
    client: stripe.StripeClient, item: CatalogItem, wanted: _WantedPrice, *, replacing: str
) -> str:
    """Create the price and return its id.

    The idempotency key names what the price sells and the price it replaces. A push retried
    after a lost answer gets the same price back (pushes take turns, so a replay is always of
    an earlier push's create). A change undone and redone (A, B, A) replaces a different
    price each time, so it never replays an old, deactivated one. A replay that returns a
    price no longer on sale is not used."""
    params: PriceCreateParams = {
        "product": wanted.product,
        "unit_amount": wanted.unit_amount,
        "currency": wanted.currency,
        "nickname": item.name,
        "lookup_key": item.lookup_key,
        # Also when no active price held the key: an inactive one may, and the new price must
        # take it over rather than fail.
        "transfer_lookup_key": True,
        "metadata": wanted.metadata,
    }
    if wanted.interval is not None:
        params["recurring"] = {"interval": wanted.interval}
    digest = hashlib.sha256(
        json.dumps([item.id, replacing, params], sort_keys=True).encode()
    ).hexdigest()
    with translated(f"creating the price of {_kind(item)} {item.id}"):
        price = client.v1.prices.create(
            params=params, options={"idempotency_key": f"creditline-price:{digest}"}
        )
        if not _replayed(price):
            return price.id
        # A replay answers with the price as it was created; ask how it is now.
        now = client.v1.prices.retrieve(price.id)
        if not now.active or now.lookup_key != item.lookup_key:
            # Stripe replayed a create of the last 24 hours whose price has since been
            # archived or lost its key: by hand, or by a later push of another change (A, B,
            # then A retried). Make a fresh one.
            price = client.v1.prices.create(
                params=params,
                options={"idempotency_key": f"creditline-price:{digest}:{uuid.uuid4().hex}"},
            )
    return price.id


def _replayed(answer: stripe.StripeObject) -> bool:
    """Whether Stripe answered from its idempotency cache (header Idempotent-Replayed)."""
    response = answer.last_response
    if response is None:
        return True  # cannot tell: check, as if it were
    headers = {name.lower(): value for name, value in response.headers.items()}
    return headers.get("idempotent-replayed", "").lower() == "true"


def _item_from_price(price: stripe.Price) -> CatalogItem:
    """The catalog item a Stripe price sells; InvalidField names what does not fit."""
    metadata = _metadata(price)
    product = price.product
    product_id = _id_of(product)
    name = (None if isinstance(product, str) else product.name) or price.nickname or ""
    item_id = metadata.get(CREDITLINE_ID) or price.lookup_key or ""
    credits = parse_amount(metadata[INCLUDED_CREDITS], f"metadata.{INCLUDED_CREDITS}")
    if price.unit_amount is None:
        raise InvalidField("unit_amount", "is not set: only fixed-amount prices can be sold")
    # A price without a lookup key is still found by its id (CatalogRepository.by_stripe_price).
    lookup_key = price.lookup_key or price.id
    item: CatalogItem
    if price.recurring is None:
        item = CreditPackage(
            id=item_id,
            name=name,
            credits=credits,
            unit_amount=price.unit_amount,
            currency=price.currency,
            lookup_key=lookup_key,
            stripe_product_id=product_id,
            stripe_price_id=price.id,
        )
    else:
        interval = _INTERVAL_FROM_STRIPE.get(_interval_of(price) or "")
        if interval is None:
            raise InvalidField("recurring", "must be every month or every year")
        item = Plan(
            id=item_id,
            name=name,
            interval=interval,
            monthly_credits=credits,
            unit_amount=price.unit_amount,
            currency=price.currency,
            renewal_policy=_renewal_policy(metadata.get(RENEWAL_POLICY)),
            rollover_cap=_rollover_cap(metadata.get(ROLLOVER_CAP)),
            lookup_key=lookup_key,
            stripe_product_id=product_id,
            stripe_price_id=price.id,
        )
    check_item(item, "price")
    return item


def _renewal_policy(text: str | None) -> RenewalPolicy:
    if not text:
        return RenewalPolicy.RESET
    try:
        return RenewalPolicy(text)
    except ValueError:
        names = ", ".join(policy.value for policy in RenewalPolicy)
        raise InvalidField(f"metadata.{RENEWAL_POLICY}", f"must be one of {names}") from None


def _rollover_cap(text: str | None) -> int | None:
    if not text:
        return None
    return parse_amount(text, f"metadata.{ROLLOVER_CAP}", allow_zero=True)


def _metadata(price: stripe.Price) -> dict[str, str]:
    """A price's metadata as a plain dict (a StripeObject has no .get)."""
    return {str(key): str(value) for key, value in price.metadata.to_dict().items()}


def _interval_of(price: stripe.Price) -> str | None:
    """ "month" or "year" for a plan's price, None for a one-time price; an interval count
    other than one is shown as e.g. "3 month", which no catalog item wants."""
    recurring = price.recurring
    if recurring is None:
        return None
    if recurring.interval_count != 1:
        return f"{recurring.interval_count} {recurring.interval}"
    return recurring.interval


def _id_of(product: str | stripe.Product) -> str:
    return product if isinstance(product, str) else product.id


def _kind(item: CatalogItem) -> Literal["package", "plan"]:
    return "package" if isinstance(item, CreditPackage) else "plan"


def _describe(pushed: PushedItem, differences: list[str]) -> str:
    subject = f"{pushed.kind} {pushed.item_id}"
    if pushed.price is Change.CREATED:
        line = f"created price {pushed.price_id} for {subject}"
    elif pushed.price is Change.UPDATED:
        line = (
            f"replaced price {pushed.replaced_price_id} with {pushed.price_id} for {subject} "
            f"({'; '.join(differences)})"
        )
    else:
        line = f"unchanged price {pushed.price_id} for {subject}"
    if pushed.product is not Change.UNCHANGED:
        line += f"; {pushed.product.value} product {pushed.product_id}"
    return line
