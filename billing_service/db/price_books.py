"""Queries for price book versions, their model prices and tiers, and account overrides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select

from billing_service.db import dataclass_json
from billing_service.db.codec import (
    decimal_text,
    from_micros,
    opt_from_micros,
    opt_to_micros,
    to_micros,
)
from billing_service.db.tables import model_prices, price_books, price_overrides, tiers
from billing_service.domain.pricing import PRICE_FIELDS, ModelPrice, PriceBook, PriceOverride, Tier

# An arbitrary, fixed key for the advisory lock that orders new price book versions.
_VERSION_LOCK = 0x6372_6564_6974_6C31  # "creditl1"


@dataclass(frozen=True)
class PriceBookInfo:
    """A version's header and how much it holds, without its prices."""

    version: int
    effective_at: datetime
    credit_usd: Decimal
    markup: Decimal
    note: str
    created_at: datetime
    model_count: int
    tier_count: int


_IN_FORCE = select(func.max(price_books.c.version)).where(
    price_books.c.effective_at <= bindparam("at")
)
_OVERRIDES = (
    select(price_overrides)
    .where(price_overrides.c.account_id == bindparam("account_id"))
    .order_by(price_overrides.c.created_at.desc(), price_overrides.c.id.desc())
)


class PriceBookRepository:
    """Reads and writes price book versions and account price overrides."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def lock_versions(self) -> None:
        """Hold the right to add the next version until the transaction ends.

        Every new version is "newest + 1", so writers must take turns: on PostgreSQL a
        transaction-scoped advisory lock; SQLite's single writer lock already serializes them.
        """
        if self._conn.dialect.name == "postgresql":
            self._conn.execute(select(func.pg_advisory_xact_lock(_VERSION_LOCK)))

    def in_force(self, at: datetime) -> int | None:
        """The newest version whose effective time has come, if any."""
        value = self._conn.execute(_IN_FORCE, {"at": to_micros(at)}).scalar_one_or_none()
        return None if value is None else int(value)

    def version_starts(self) -> list[tuple[datetime, int]]:
        """(effective time, version) of every version, oldest version first."""
        rows = self._conn.execute(
            select(price_books.c.effective_at, price_books.c.version).order_by(
                price_books.c.version
            )
        )
        return [(from_micros(row[0]), int(row[1])) for row in rows]

    def newest(self) -> int | None:
        """The highest version number, in force or not."""
        value = self._conn.execute(select(func.max(price_books.c.version))).scalar_one_or_none()
        return None if value is None else int(value)

    def load(self, version: int) -> PriceBook | None:
        """A whole version, or None."""
        head = self._conn.execute(
            select(price_books).where(price_books.c.version == version)
        ).first()
        if head is None:
            return None
        models = self._conn.execute(
            select(model_prices)
            .where(model_prices.c.version == version)
            .order_by(model_prices.c.provider, model_prices.c.model)
        )
        tier_rows = self._conn.execute(
            select(tiers).where(tiers.c.version == version).order_by(tiers.c.name)
        )
        h = head._mapping
        return PriceBook(
            version=h["version"],
            effective_at=from_micros(h["effective_at"]),
            credit_usd=Decimal(h["credit_usd"]),
            markup=Decimal(h["markup"]),
            note=h["note"],
            created_at=from_micros(h["created_at"]),
            models=tuple(_model(r._mapping) for r in models),
            tiers=tuple(
                Tier(
                    name=t._mapping["name"],
                    base_fee=t._mapping["base_fee"],
                    fee_unit=t._mapping["fee_unit"],
                    description=t._mapping["description"],
                )
                for t in tier_rows
            ),
        )

    def add(self, book: PriceBook) -> None:
        """Insert a new version; a concurrent twin with the same number raises IntegrityError."""
        self._conn.execute(
            insert(price_books).values(
                version=book.version,
                effective_at=to_micros(book.effective_at),
                credit_usd=decimal_text(book.credit_usd),
                markup=decimal_text(book.markup),
                note=book.note,
                created_at=to_micros(book.created_at),
            )
        )
        if book.models:
            self._conn.execute(
                insert(model_prices), [_model_row(book.version, m) for m in book.models]
            )
        if book.tiers:
            self._conn.execute(
                insert(tiers),
                [
                    {
                        "version": book.version,
                        "name": t.name,
                        "base_fee": t.base_fee,
                        "fee_unit": t.fee_unit,
                        "description": t.description,
                    }
                    for t in book.tiers
                ],
            )

    def page(self, *, before: int | None, limit: int) -> list[PriceBookInfo]:
        """Version headers newest first, strictly below the cursor."""
        models = (
            select(func.count())
            .where(model_prices.c.version == price_books.c.version)
            .scalar_subquery()
        )
        tier_count = (
            select(func.count()).where(tiers.c.version == price_books.c.version).scalar_subquery()
        )
        query = select(price_books, models.label("models"), tier_count.label("tiers"))
        if before is not None:
            query = query.where(price_books.c.version < before)
        rows = self._conn.execute(query.order_by(price_books.c.version.desc()).limit(limit))
        return [
            PriceBookInfo(
                version=m["version"],
                effective_at=from_micros(m["effective_at"]),
                credit_usd=Decimal(m["credit_usd"]),
                markup=Decimal(m["markup"]),
                note=m["note"],
                created_at=from_micros(m["created_at"]),
                model_count=int(m["models"]),
                tier_count=int(m["tiers"]),
            )
            for m in (r._mapping for r in rows)
        ]

    def add_override(self, override: PriceOverride) -> None:
        """Insert an account price override."""
        self._conn.execute(
            insert(price_overrides).values(
                id=override.id,
                account_id=override.account_id,
                provider=override.provider,
                model=override.model,
                fixed_price=dataclass_json.dumps(override.fixed) if override.fixed else None,
                discount_percent=(
                    None
                    if override.discount_percent is None
                    else decimal_text(override.discount_percent)
                ),
                effective_at=to_micros(override.effective_at),
                expires_at=opt_to_micros(override.expires_at),
                created_at=to_micros(override.created_at),
            )
        )

    def overrides_for(self, account_id: str) -> list[PriceOverride]:
        """The account's overrides, newest first."""
        rows = self._conn.execute(_OVERRIDES, {"account_id": account_id})
        return [_override(r._mapping) for r in rows]


def _model_row(version: int, m: ModelPrice) -> dict[str, Any]:
    row: dict[str, Any] = {
        "version": version,
        "provider": m.provider,
        "model": m.model,
        "unit": m.unit,
        "source": m.source,
        "as_of": m.as_of,
    }
    for column in PRICE_FIELDS:
        value = getattr(m, column)
        row[column] = None if value is None else decimal_text(value)
    return row


def _model(m: Any) -> ModelPrice:
    prices = {c: (None if m[c] is None else Decimal(m[c])) for c in PRICE_FIELDS}
    return ModelPrice(
        provider=m["provider"],
        model=m["model"],
        unit=m["unit"],
        source=m["source"],
        as_of=m["as_of"],
        **prices,
    )


def _override(m: Any) -> PriceOverride:
    return PriceOverride(
        id=m["id"],
        account_id=m["account_id"],
        provider=m["provider"],
        model=m["model"],
        fixed=dataclass_json.loads(ModelPrice, m["fixed_price"]) if m["fixed_price"] else None,
        discount_percent=(
            None if m["discount_percent"] is None else Decimal(m["discount_percent"])
        ),
        effective_at=from_micros(m["effective_at"]),
        expires_at=opt_from_micros(m["expires_at"]),
        created_at=from_micros(m["created_at"]),
    )
