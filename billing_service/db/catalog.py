"""Queries for the catalog: credit packages and plans, and their Stripe ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from billing_service.db.codec import to_micros
from billing_service.db.tables import catalog_items, catalog_prices
from billing_service.domain.catalog import CatalogItem, CreditPackage, Interval, Plan, RenewalPolicy

PACKAGE = "PACKAGE"
PLAN = "PLAN"


class CatalogRepository:
    """Reads and writes catalog items."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def packages(self, *, include_inactive: bool = False) -> list[CreditPackage]:
        """Credit packages by price."""
        query = select(catalog_items).where(catalog_items.c.kind == PACKAGE)
        if not include_inactive:
            query = query.where(catalog_items.c.active)
        rows = self._conn.execute(
            query.order_by(catalog_items.c.unit_amount, catalog_items.c.id)
        ).mappings()
        return [_package(row) for row in rows]

    def plans(self, *, include_inactive: bool = False) -> list[Plan]:
        """Plans by interval (monthly first), then price."""
        query = select(catalog_items).where(catalog_items.c.kind == PLAN)
        if not include_inactive:
            query = query.where(catalog_items.c.active)
        rows = self._conn.execute(
            query.order_by(
                catalog_items.c.interval, catalog_items.c.unit_amount, catalog_items.c.id
            )
        ).mappings()
        return [_plan(row) for row in rows]

    def all(self) -> list[CatalogItem]:
        """Every item, active or not."""
        return [*self.packages(include_inactive=True), *self.plans(include_inactive=True)]

    def get(self, item_id: str) -> CatalogItem | None:
        """One item by its catalog id."""
        row = (
            self._conn.execute(select(catalog_items).where(catalog_items.c.id == item_id))
            .mappings()
            .first()
        )
        return None if row is None else _item(row)

    def by_stripe_price(self, price_id: str, lookup_key: str = "") -> CatalogItem | None:
        """The item sold at a Stripe price, found by price id (current or replaced) or by
        lookup key."""
        if price_id:
            row = (
                self._conn.execute(
                    select(catalog_items)
                    .join(catalog_prices, catalog_prices.c.item_id == catalog_items.c.id)
                    .where(catalog_prices.c.stripe_price_id == price_id)
                )
                .mappings()
                .first()
            )
            if row is not None:
                return _item(row)
        conditions = [catalog_items.c.stripe_price_id == price_id] if price_id else []
        if lookup_key:
            conditions.append(catalog_items.c.lookup_key == lookup_key)
        if not conditions:
            return None
        row = (
            self._conn.execute(
                select(catalog_items).where(or_(*conditions)).order_by(catalog_items.c.id)
            )
            .mappings()
            .first()
        )
        return None if row is None else _item(row)

    def upsert(self, item: CatalogItem, now: datetime) -> None:
        """Insert an item or replace its fields; Stripe ids are kept unless the item has them."""
        values = _row(item, now)
        existing = self.get(item.id)
        if existing is None:
            self._conn.execute(insert(catalog_items).values(**values))
        else:
            if not item.stripe_price_id:
                values.pop("stripe_price_id")
                values.pop("stripe_product_id")
            self._conn.execute(
                update(catalog_items).where(catalog_items.c.id == item.id).values(**values)
            )
        self._remember_price(item.id, item.stripe_price_id, now)

    def set_stripe_ids(
        self, item_id: str, *, product_id: str, price_id: str, now: datetime
    ) -> None:
        """Record the Stripe product and price an item is sold at, keeping the prices it was
        sold at before (subscriptions stay on a replaced price until they renew)."""
        self._remember_price(item_id, price_id, now)
        self._conn.execute(
            update(catalog_items)
            .where(catalog_items.c.id == item_id)
            .values(
                stripe_product_id=product_id, stripe_price_id=price_id, updated_at=to_micros(now)
            )
        )

    def _remember_price(self, item_id: str, price_id: str, now: datetime) -> None:
        if not price_id:
            return
        known = select(catalog_prices.c.item_id).where(catalog_prices.c.stripe_price_id == price_id)
        if self._conn.execute(known).first() is None:
            self._conn.execute(
                insert(catalog_prices).values(
                    stripe_price_id=price_id, item_id=item_id, recorded_at=to_micros(now)
                )
            )

    def is_empty(self) -> bool:
        """Whether no item was ever loaded."""
        return self._conn.execute(select(catalog_items.c.id).limit(1)).first() is None


def _row(item: CatalogItem, now: datetime) -> dict[str, Any]:
    common = {
        "id": item.id,
        "name": item.name,
        "unit_amount": item.unit_amount,
        "currency": item.currency,
        "lookup_key": item.lookup_key,
        "stripe_product_id": item.stripe_product_id,
        "stripe_price_id": item.stripe_price_id,
        "active": item.active,
        "updated_at": to_micros(now),
    }
    if isinstance(item, CreditPackage):
        return {
            **common,
            "kind": PACKAGE,
            "credits": item.credits,
            "interval": "",
            "renewal_policy": "",
            "rollover_cap": None,
        }
    return {
        **common,
        "kind": PLAN,
        "credits": item.monthly_credits,
        "interval": item.interval.value,
        "renewal_policy": item.renewal_policy.value,
        "rollover_cap": item.rollover_cap,
    }


def _item(row: Any) -> CatalogItem:
    return _package(row) if row["kind"] == PACKAGE else _plan(row)


def _package(row: Any) -> CreditPackage:
    return CreditPackage(
        id=row["id"],
        name=row["name"],
        credits=row["credits"],
        unit_amount=row["unit_amount"],
        currency=row["currency"],
        lookup_key=row["lookup_key"],
        stripe_product_id=row["stripe_product_id"],
        stripe_price_id=row["stripe_price_id"],
        active=bool(row["active"]),
    )


def _plan(row: Any) -> Plan:
    return Plan(
        id=row["id"],
        name=row["name"],
        interval=Interval(row["interval"]),
        monthly_credits=row["credits"],
        unit_amount=row["unit_amount"],
        currency=row["currency"],
        renewal_policy=RenewalPolicy(row["renewal_policy"]),
        rollover_cap=row["rollover_cap"],
        lookup_key=row["lookup_key"],
        stripe_product_id=row["stripe_product_id"],
        stripe_price_id=row["stripe_price_id"],
        active=bool(row["active"]),
    )
