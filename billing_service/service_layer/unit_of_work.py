"""Transactions: one per use case, begun and committed here and nowhere else.

A write runs inside one transaction; if the database reports a transient conflict
(serialization failure, deadlock, or a unique-key race such as two concurrent calls with the
same idempotency key), the whole function is run again in a fresh transaction, where it sees
the winner's committed work. Losing the connection becomes Unavailable: the transaction was
rolled back, so the call changed nothing and its retry is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cached_property
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from billing_service.db import named_locks
from billing_service.db.accounts import AccountRepository
from billing_service.db.buckets import BucketRepository
from billing_service.db.catalog import CatalogRepository
from billing_service.db.idempotency import IdempotencyRepository
from billing_service.db.ledger import LedgerRepository
from billing_service.db.price_books import PriceBookRepository
from billing_service.db.reservations import ReservationRepository
from billing_service.db.stripe_records import StripeRecordRepository
from billing_service.db.subscriptions import SubscriptionRepository
from billing_service.db.write_behind import Writes
from billing_service.domain.errors import Unavailable

T = TypeVar("T")

log = logging.getLogger(__name__)

# PostgreSQL SQLSTATEs that mean "run the transaction again".
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
MAX_ATTEMPTS = 5


class RetryTransaction(Exception):
    """Raised by work that learned, mid-transaction, that a fresh attempt would see more."""


class Tx:
    """The repositories of one open transaction."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # The hot writes (a flush's) go through this, which can hold them back (write_behind).
        self.writes = Writes(connection)
        self.accounts = AccountRepository(connection, self.writes)
        self.buckets = BucketRepository(connection, self.writes)
        self.ledger = LedgerRepository(connection, self.writes)
        self.reservations = ReservationRepository(connection, self.writes)
        self.idempotency = IdempotencyRepository(connection, self.writes)
        self.price_books = PriceBookRepository(connection)

    @cached_property
    def catalog(self) -> CatalogRepository:
        """Credit packages and plans (built on first use: most calls never need it)."""
        return CatalogRepository(self.connection)

    @cached_property
    def subscriptions(self) -> SubscriptionRepository:
        """The subscription mirror and allowance periods."""
        return SubscriptionRepository(self.connection)

    @cached_property
    def stripe(self) -> StripeRecordRepository:
        """Purchases, disputes and processed Stripe events."""
        return StripeRecordRepository(self.connection)


class Database:
    """Runs use-case functions in transactions on one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read_options: dict[str, object] = {"read_only": True}
        self._statement_options: dict[str, object] = {"read_only": True, "single_statement": True}
        if engine.dialect.name == "postgresql":
            self._read_options.update(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            self._statement_options = {"isolation_level": "AUTOCOMMIT"}

    def exclusive(
        self, name: str, *, waiting: Callable[[], None]
    ) -> AbstractContextManager[named_locks.Held]:
        """Hold the lock called name, across processes, until the block ends, for work that
        must not overlap itself but talks to the network (no transaction stays open). When
        another process holds it, calls waiting() once, then waits. Check the lock it gives
        just before the write it protects (named_locks.Held.check)."""
        return named_locks.held(self.engine, name, waiting=waiting)

    def write(self, work: Callable[[Tx], T]) -> T:
        """Run work in a read-write transaction, retrying transient conflicts."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.engine.begin() as connection:
                    return work(Tx(connection))
            except RetryTransaction:
                if attempt == MAX_ATTEMPTS:
                    raise AssertionError("a retried transaction kept asking to retry") from None
            except IntegrityError:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.debug("unique-key race, retrying", extra={"attempt": attempt})
            except DBAPIError as error:
                if _sqlstate(error) in _RETRYABLE_SQLSTATES and attempt < MAX_ATTEMPTS:
                    log.debug("transaction conflict, retrying", extra={"attempt": attempt})
                    continue
                if isinstance(error, OperationalError) and _sqlstate(error) is None:
                    raise Unavailable(
                        f"database unavailable: {type(error.orig).__name__}"
                    ) from error
                if error.connection_invalidated:
                    raise Unavailable("database connection lost") from error
                raise
        raise AssertionError("unreachable")

    def read_statement(self, work: Callable[[Tx], T]) -> T:
        """Run work, which must execute exactly one statement, outside any transaction.

        One statement sees one snapshot on both databases, so it needs no BEGIN and COMMIT:
        two round trips saved on the hottest reads (GetBalance).
        """
        try:
            with self.engine.connect() as raw:
                return work(Tx(raw.execution_options(**self._statement_options)))
        except DBAPIError as error:
            if error.connection_invalidated or isinstance(error, OperationalError):
                raise Unavailable("database unavailable") from error
            raise

    def read(self, work: Callable[[Tx], T]) -> T:
        """Run work in a read-only transaction that sees one snapshot on both databases:
        a deferred transaction on SQLite, REPEATABLE READ on PostgreSQL (where READ COMMITTED
        would let two statements of one read see different commits)."""
        try:
            with self.engine.connect() as raw:
                connection = raw.execution_options(**self._read_options)
                with connection.begin():
                    return work(Tx(connection))
        except DBAPIError as error:
            if error.connection_invalidated or isinstance(error, OperationalError):
                raise Unavailable("database unavailable") from error
            raise


def _sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)
