"""Queries for reservations (holds)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, tuple_

from billing_service.db import dataclass_json
from billing_service.db.codec import (
    dump_map,
    dump_movements,
    from_micros,
    load_map,
    load_movements,
    opt_from_micros,
    opt_to_micros,
    to_micros,
)
from billing_service.db.tables import reservations
from billing_service.db.write_behind import Writes, keyed_update, table_insert
from billing_service.domain.model import Reservation, ReservationStatus
from billing_service.domain.pricing import HoldPricing, OverrunPolicy

_ACTIVE = ReservationStatus.ACTIVE.value


_GET = select(reservations).where(reservations.c.id == bindparam("reservation_id"))
_GET_MANY = select(reservations).where(reservations.c.id.in_(bindparam("ids", expanding=True)))
_ADD = table_insert(reservations)
_ACCOUNTS_OF = select(reservations.c.id, reservations.c.account_id).where(
    reservations.c.id.in_(bindparam("ids", expanding=True))
)
_SAVE = keyed_update(
    reservations,
    ("id", "r_id"),
    {
        "status": "r_status",
        "committed_amount": "r_committed",
        "resolved_at": "r_resolved",
        "ledger_entry_id": "r_entry",
    },
)


class ReservationRepository:
    """Reads and writes rows of the reservations table."""

    def __init__(self, connection: Connection, writes: Writes | None = None) -> None:
        self._conn = connection
        self._writes = writes or Writes(connection)
        # Holds this transaction read under their account's lock or wrote, as they now stand.
        self._known: dict[str, Reservation] = {}

    def remember(self, holds: Iterable[Reservation]) -> None:
        """Keep holds read under their accounts' locks, so get() need not read them again.

        Only for holds whose account this transaction has locked: nobody else can change them
        until it ends, and this repository sees every change it makes.
        """
        for hold in holds:
            self._known[hold.id] = hold

    def get(self, reservation_id: str) -> Reservation | None:
        """One hold, or None."""
        known = self._known.get(reservation_id)
        if known is not None:
            return known
        row = self._conn.execute(_GET, {"reservation_id": reservation_id}).first()
        return None if row is None else _reservation(row._mapping)

    def get_many(self, reservation_ids: list[str]) -> dict[str, Reservation]:
        """The named holds that exist, by id."""
        rows = self._conn.execute(_GET_MANY, {"ids": sorted(set(reservation_ids))})
        return {row.id: _reservation(row._mapping) for row in rows}

    def accounts_of(self, reservation_ids: list[str]) -> dict[str, str]:
        """The accounts the named holds belong to (a hold's account never changes)."""
        rows = self._conn.execute(_ACCOUNTS_OF, {"ids": sorted(set(reservation_ids))})
        return {str(row[0]): str(row[1]) for row in rows}

    def add(self, reservation: Reservation) -> None:
        """Insert a new hold."""
        self._writes.execute(_ADD, _row(reservation))
        self._known[reservation.id] = reservation

    def save(self, reservation: Reservation) -> None:
        """Write a hold's resolution."""
        self._writes.execute(
            _SAVE,
            {
                "r_id": reservation.id,
                "r_status": reservation.status.value,
                "r_committed": reservation.committed_amount,
                "r_resolved": opt_to_micros(reservation.resolved_at),
                "r_entry": reservation.ledger_entry_id,
            },
        )
        if reservation.id in self._known:
            self._known[reservation.id] = reservation

    def expired_active(self, account_id: str, now: datetime) -> list[Reservation]:
        """The account's active holds whose expiry time has passed."""
        rows = self._conn.execute(
            select(reservations)
            .where(
                reservations.c.account_id == account_id,
                reservations.c.status == _ACTIVE,
                reservations.c.expires_at <= to_micros(now),
            )
            .order_by(reservations.c.expires_at, reservations.c.id)
        )
        return [_reservation(r._mapping) for r in rows]

    def next_expiry(self, account_id: str) -> datetime | None:
        """When the account's next active hold expires, if it has any."""
        value = self._conn.execute(
            select(func.min(reservations.c.expires_at)).where(
                reservations.c.account_id == account_id, reservations.c.status == _ACTIVE
            )
        ).scalar_one_or_none()
        return opt_from_micros(value)

    def page(
        self,
        account_id: str,
        *,
        before: tuple[int, str] | None,
        limit: int,
        statuses: Sequence[ReservationStatus],
    ) -> list[Reservation]:
        """The account's holds newest first, strictly older than the cursor."""
        query = select(reservations).where(reservations.c.account_id == account_id)
        if statuses:
            query = query.where(reservations.c.status.in_([s.value for s in statuses]))
        if before is not None:
            query = query.where(tuple_(reservations.c.created_at, reservations.c.id) < before)
        query = query.order_by(reservations.c.created_at.desc(), reservations.c.id.desc())
        return [_reservation(r._mapping) for r in self._conn.execute(query.limit(limit))]


def cursor_of(reservation: Reservation) -> tuple[int, str]:
    """The keyset cursor that pages continue after."""
    return (to_micros(reservation.created_at), reservation.id)


def _row(r: Reservation) -> dict[str, Any]:
    return {
        "id": r.id,
        "account_id": r.account_id,
        "amount": r.amount,
        "status": r.status.value,
        "committed_amount": r.committed_amount,
        "allocations": dump_movements(r.allocations),
        "feature": r.feature,
        "request_id": r.request_id,
        "metadata": dump_map(r.metadata),
        "created_at": to_micros(r.created_at),
        "expires_at": to_micros(r.expires_at),
        "resolved_at": opt_to_micros(r.resolved_at),
        "ledger_entry_id": r.ledger_entry_id,
        "overrun_policy": r.overrun_policy.value,
        "pricing": dataclass_json.dumps(r.pricing) if r.pricing else None,
    }


def reservation_from_row(m: Any) -> Reservation:
    """A Reservation from a mapping of a reservations row."""
    return _reservation(m)


def _reservation(m: Any) -> Reservation:
    return Reservation(
        id=m["id"],
        account_id=m["account_id"],
        amount=m["amount"],
        status=ReservationStatus(m["status"]),
        committed_amount=m["committed_amount"],
        allocations=load_movements(m["allocations"]),
        feature=m["feature"],
        request_id=m["request_id"],
        metadata=load_map(m["metadata"]),
        created_at=from_micros(m["created_at"]),
        expires_at=from_micros(m["expires_at"]),
        resolved_at=opt_from_micros(m["resolved_at"]),
        ledger_entry_id=m["ledger_entry_id"],
        overrun_policy=OverrunPolicy(m["overrun_policy"]),
        pricing=dataclass_json.loads(HoldPricing, m["pricing"]) if m["pricing"] else None,
    )
