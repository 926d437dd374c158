"""Queries for accounts. The account row is also the lock that orders every change to its
buckets, holds and ledger: `lock` must come first in any unit of work that changes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, func, insert, select, update

from billing_service.db.codec import (
    dump_map,
    from_micros,
    load_map,
    opt_from_micros,
    opt_to_micros,
    to_micros,
)
from billing_service.db.tables import accounts
from billing_service.db.write_behind import Writes, keyed_update
from billing_service.domain.model import Account, BillingMode, GrantSource

# An arbitrary, fixed key for the advisory lock that orders parent changes.
_HIERARCHY_LOCK = 0x6372_6564_6974_6C32  # "creditl2"


class LockedAccount:
    """An account row read under its lock, with the cached sums the book starts from."""

    def __init__(
        self,
        account: Account,
        balance: int,
        held: int,
        sweep_due_at: int | None,
        frozen_sources: str = "",
    ):
        self.account = account
        self.balance = balance
        self.held = held
        self.sweep_due_at = opt_from_micros(sweep_due_at)
        self.frozen_sources = parse_sources(frozen_sources)


# Built once: these run on every credit-moving call, and building a statement costs more
# Python time than executing a cached one.
_LOCK = select(accounts).where(accounts.c.id == bindparam("account_id")).with_for_update()
# Several accounts locked in id order, the order every multi-account lock takes, so two
# transactions locking overlapping sets cannot deadlock.
_LOCK_MANY = (
    select(accounts)
    .where(accounts.c.id.in_(bindparam("account_ids", expanding=True)))
    .order_by(accounts.c.id)
    .with_for_update()
)
_SAVE_SUMS = keyed_update(
    accounts,
    ("id", "account_id"),
    {"balance": "balance", "held": "held", "sweep_due_at": "sweep_due_at"},
)


_GET = select(accounts).where(accounts.c.id == bindparam("account_id"))
_SUMS = select(
    accounts.c.balance, accounts.c.held, accounts.c.sweep_due_at, accounts.c.frozen_sources
).where(accounts.c.id == bindparam("account_id"))


def parse_sources(text: str) -> frozenset[GrantSource]:
    """The frozen grant sources stored as comma-separated names."""
    return frozenset(GrantSource(name) for name in text.split(",") if name)


class Sums(NamedTuple):
    """An account's cached sums, read without locking."""

    balance: int
    held: int
    sweep_due_at: datetime | None
    frozen_sources: frozenset[GrantSource]


class AccountRepository:
    """Reads and writes rows of the accounts table."""

    def __init__(self, connection: Connection, writes: Writes | None = None) -> None:
        self._conn = connection
        self._writes = writes or Writes(connection)

    def lock_hierarchy(self) -> None:
        """Hold the right to change parent links until the transaction ends.

        A cycle check reads a chain of parents; two concurrent re-parentings could each pass
        it and together make a cycle, so they take turns: an advisory lock on PostgreSQL, the
        single writer lock on SQLite.
        """
        if self._conn.dialect.name == "postgresql":
            self._conn.execute(select(func.pg_advisory_xact_lock(_HIERARCHY_LOCK)))

    def get(self, account_id: str) -> Account | None:
        """The account, or None."""
        row = self._conn.execute(_GET, {"account_id": account_id}).first()
        return None if row is None else _account(row._mapping)

    def get_sums(self, account_id: str) -> Sums | None:
        """The cached balance and held sums, the next sweep time and the frozen sources,
        without locking."""
        row = self._conn.execute(_SUMS, {"account_id": account_id}).first()
        if row is None:
            return None
        return Sums(row[0], row[1], opt_from_micros(row[2]), parse_sources(row[3]))

    def by_stripe_customer(self, customer_id: str) -> str | None:
        """The id of the account linked to a Stripe customer."""
        if not customer_id:
            return None
        row = self._conn.execute(
            select(accounts.c.id)
            .where(accounts.c.stripe_customer_id == customer_id)
            .order_by(accounts.c.id)
            .limit(1)
        ).first()
        return None if row is None else str(row[0])

    def link_stripe_customer(self, account_id: str, customer_id: str) -> None:
        """Link an account to its Stripe customer if it has none yet."""
        self._conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.stripe_customer_id == "")
            .values(stripe_customer_id=customer_id)
        )

    def set_frozen_sources(self, account_id: str, sources: frozenset[GrantSource]) -> None:
        """Record which grant sources cannot be spent now (under the account's lock)."""
        self._conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id)
            .values(frozen_sources=",".join(sorted(sources)))
        )

    def lock(self, account_id: str) -> LockedAccount | None:
        """Read the account and hold its row lock until the transaction ends."""
        row = self._conn.execute(_LOCK, {"account_id": account_id}).first()
        return None if row is None else locked_account(row._mapping)

    def lock_many(self, account_ids: list[str]) -> dict[str, LockedAccount]:
        """Read the accounts that exist among account_ids, locking them in id order."""
        rows = self._conn.execute(_LOCK_MANY, {"account_ids": sorted(set(account_ids))})
        return {row.id: locked_account(row._mapping) for row in rows}

    def add(self, account: Account) -> None:
        """Insert a new account with a zero balance."""
        self._conn.execute(insert(accounts).values(**_row(account), balance=0, held=0))

    def save(self, account: Account) -> None:
        """Write an account's descriptive fields."""
        self._conn.execute(
            update(accounts).where(accounts.c.id == account.id).values(**_row(account))
        )

    def save_sums(
        self, account_id: str, *, balance: int, held: int, sweep_due_at: datetime | None
    ) -> None:
        """Write the cached balance and held sums and the next time-driven change."""
        self._writes.execute(
            _SAVE_SUMS,
            {
                "account_id": account_id,
                "balance": balance,
                "held": held,
                "sweep_due_at": opt_to_micros(sweep_due_at),
            },
        )

    def save_sums_many(self, sums: list[tuple[str, int, int, datetime | None]]) -> None:
        """save_sums for several accounts, as one batch: (id, balance, held, sweep_due_at)."""
        if sums:
            self._writes.execute(
                _SAVE_SUMS,
                [
                    {
                        "account_id": account_id,
                        "balance": balance,
                        "held": held,
                        "sweep_due_at": opt_to_micros(due),
                    }
                    for account_id, balance, held, due in sums
                ],
            )

    def page(self, *, after_id: str, limit: int, parent_id: str | None) -> list[Account]:
        """Accounts in id order after after_id, optionally only one parent's children."""
        query = select(accounts).where(accounts.c.id > after_id)
        if parent_id is not None:
            query = query.where(accounts.c.parent_id == parent_id)
        rows = self._conn.execute(query.order_by(accounts.c.id).limit(limit))
        return [_account(r._mapping) for r in rows]

    def parent_of(self, account_id: str) -> str | None:
        """The account's parent id, or None; used to refuse parent cycles."""
        return self._conn.execute(
            select(accounts.c.parent_id).where(accounts.c.id == account_id)
        ).scalar_one_or_none()

    def due_for_sweep(self, now: datetime, limit: int) -> list[str]:
        """Ids of accounts whose buckets or holds have time-driven changes due by now."""
        rows = self._conn.execute(
            select(accounts.c.id)
            .where(accounts.c.sweep_due_at <= to_micros(now))
            .order_by(accounts.c.sweep_due_at)
            .limit(limit)
        )
        return [r[0] for r in rows]


def _row(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "billing_mode": account.billing_mode.value,
        "stripe_customer_id": account.stripe_customer_id,
        "parent_id": account.parent_id or None,
        "low_balance_threshold": account.low_balance_threshold,
        "metadata": dump_map(account.metadata),
        "created_at": to_micros(account.created_at),
        "updated_at": to_micros(account.updated_at),
    }


def locked_account(m: Any) -> LockedAccount:
    """A LockedAccount from a mapping of an accounts row."""
    return LockedAccount(
        _account(m), m["balance"], m["held"], m["sweep_due_at"], m["frozen_sources"]
    )


def _account(m: Any) -> Account:
    return Account(
        id=m["id"],
        billing_mode=BillingMode(m["billing_mode"]),
        stripe_customer_id=m["stripe_customer_id"],
        parent_id=m["parent_id"] or "",
        low_balance_threshold=m["low_balance_threshold"],
        metadata=load_map(m["metadata"]),
        created_at=from_micros(m["created_at"]),
        updated_at=from_micros(m["updated_at"]),
    )
