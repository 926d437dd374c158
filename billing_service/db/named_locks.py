"""Named locks held across processes for the length of an operation that talks to the
network, such as a catalog push: no database transaction stays open meanwhile.

PostgreSQL: a session advisory lock on a connection kept for the operation; the server drops
it if the process dies, and also if the connection is cut (an idle timeout, a proxy, a
failover), so the holder checks it still has it before it writes (`Held.check`). It needs a
direct connection or session-mode pooling: behind a transaction-mode pooler the lock and its
release may run on different server connections. SQLite: an exclusive `flock` on a file
beside the database, which the kernel drops only when the process dies. An in-memory SQLite
database is one process's own and needs none.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from billing_service.domain.errors import FailedPrecondition

log = logging.getLogger(__name__)


class Held:
    """A lock held until its block ends."""

    def __init__(self, name: str, connection: Connection | None = None) -> None:
        self._name = name
        self._connection = connection

    def check(self) -> None:
        """Raise FailedPrecondition (reason LOCK_LOST) if the lock was lost meanwhile: another
        holder may have run since, so what this one read is stale. Call it just before the
        write the lock protects."""
        if self._connection is None:
            return  # a flock is held as long as the process lives
        try:
            self._connection.execute(select(1))
        except SQLAlchemyError as error:
            raise FailedPrecondition(
                f"lost the {self._name} lock (its database connection was cut): nothing was "
                "written; run it again",
                reason="LOCK_LOST",
                lock=self._name,
            ) from error


@contextmanager
def held(engine: Engine, name: str, *, waiting: Callable[[], None]) -> Iterator[Held]:
    """Hold the lock called name until the block ends. When another process holds it,
    calls waiting() once and then waits for it."""
    if engine.dialect.name == "postgresql":
        with _advisory(engine, name, waiting) as lock:
            yield lock
        return
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        yield Held(name)
        return
    with open(f"{path}.{name}.lock", "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield Held(name)
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


@contextmanager
def _advisory(engine: Engine, name: str, waiting: Callable[[], None]) -> Iterator[Held]:
    key = func.hashtextextended(f"creditline:{name}", 0)
    with engine.connect() as pooled:
        connection = pooled.execution_options(isolation_level="AUTOCOMMIT")
        if not connection.scalar(select(func.pg_try_advisory_lock(key))):
            waiting()
            connection.execute(select(func.pg_advisory_lock(key)))
        try:
            yield Held(name, connection)
        finally:
            _unlock(pooled, connection, key, name)


def _unlock(pooled: Connection, connection: Connection, key: object, name: str) -> None:
    """Release the lock. A connection that cannot say it did is closed rather than pooled:
    closing it drops whatever it still holds."""
    try:
        released = connection.scalar(select(func.pg_advisory_unlock(key)))
    except SQLAlchemyError:
        released = False
    if not released:
        log.warning("could not release a lock; closing its connection", extra={"lock": name})
        pooled.invalidate()
