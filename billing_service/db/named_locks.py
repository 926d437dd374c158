"""Named locks held across processes for the length of an operation that talks to the
network, such as a catalog push: no database transaction stays open meanwhile.

PostgreSQL: a session advisory lock on a connection kept for the operation; the server drops
it if the process dies. SQLite: an exclusive `flock` on a file beside the database, which the
kernel drops if the process dies. An in-memory SQLite database is one process's own and needs
none.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError


@contextmanager
def held(engine: Engine, name: str, *, waiting: Callable[[], None]) -> Iterator[None]:
    """Hold the lock called name until the block ends. When another process holds it,
    calls waiting() once and then waits for it."""
    if engine.dialect.name == "postgresql":
        with _advisory(engine, name, waiting):
            yield
        return
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        yield
        return
    with open(f"{path}.{name}.lock", "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


@contextmanager
def _advisory(engine: Engine, name: str, waiting: Callable[[], None]) -> Iterator[None]:
    key = func.hashtextextended(f"creditline:{name}", 0)
    with engine.connect() as pooled:
        connection = pooled.execution_options(isolation_level="AUTOCOMMIT")
        if not connection.scalar(select(func.pg_try_advisory_lock(key))):
            waiting()
            connection.execute(select(func.pg_advisory_lock(key)))
        try:
            yield
        finally:
            # If the connection is gone, the server dropped its locks with it.
            with suppress(DBAPIError):
                connection.execute(select(func.pg_advisory_unlock(key)))
