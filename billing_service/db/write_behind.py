"""Writes held back to the end of a transaction, then sent together on the driver connection.

Group commit's flush writes to five tables for a whole batch of calls. Sent one statement at
a time through SQLAlchemy, that is one round trip each, and each return from the network has
to win the GIL back from every request thread. Held back instead, they go in one PostgreSQL
pipeline together with the COMMIT: one round trip for all of them. On SQLite (no network)
they are executemany calls on the driver connection, which skips SQLAlchemy's per-statement
Python.

Invariant: the transaction reads what it wrote. Any statement executed through SQLAlchemy
on the connection while writes are held sends them first (a before_execute hook), so a read
never misses a held write and the order of writes is the order they were asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Dialect, event
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.dml import UpdateBase

Row = Mapping[str, Any]

# Statements compiled to the driver's SQL, by (dialect, statement, column keys): built once.
# Only module-level statements are held, so this stays small.
_COMPILED: dict[tuple[str, UpdateBase, tuple[str, ...]], tuple[str, dict[str, Any]]] = {}


def driver_sql(
    dialect: Dialect, statement: UpdateBase, keys: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """The statement as the driver's SQL with named parameters, and its fixed parameters.

    keys are the row's keys: an INSERT without explicit values inserts exactly those columns.
    """
    cache_key = (dialect.name, statement, tuple(keys))
    found = _COMPILED.get(cache_key)
    if found is None:
        target = sqlite_dialect(paramstyle="named") if dialect.name == "sqlite" else dialect
        compiled: Compiled = statement.compile(dialect=target, column_keys=list(keys))
        found = (str(compiled), {k: v for k, v in compiled.params.items() if k not in keys})
        _COMPILED[cache_key] = found
    return found


@contextmanager
def driver_errors(conn: Connection) -> Iterator[None]:
    """Raise the driver's errors as SQLAlchemy would have (IntegrityError, OperationalError,
    with connection_invalidated on a lost connection), so statements run on the driver
    connection get the same retry and Unavailable handling as the rest."""
    dbapi: Any = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as error:
        lost = conn.dialect.is_disconnect(error, conn.connection.dbapi_connection, None)
        if lost:
            conn.invalidate(error)
        raise DBAPIError.instance(
            None,
            None,
            error,
            dbapi.Error,
            connection_invalidated=lost,
            dialect=conn.dialect,
        ) from error


class Writes:
    """Runs a repository's writes at once, or holds them until send() while holding()."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._held: list[tuple[UpdateBase, list[Row]]] | None = None

    def execute(self, statement: UpdateBase, rows: Row | Sequence[Row]) -> None:
        """Execute (or hold) a write statement for one row or many."""
        if self._held is None:
            self._conn.execute(statement, rows if isinstance(rows, Mapping) else list(rows))
            return
        batch = [rows] if isinstance(rows, Mapping) else list(rows)
        if not batch:
            return
        if self._held and self._held[-1][0] is statement:
            self._held[-1][1].extend(batch)
        else:
            self._held.append((statement, batch))

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Hold writes inside the block; whatever runs through SQLAlchemy sends them first.

        The block must end with send(): what is still held when it ends is dropped (the
        transaction is failing: its exception is on its way out).
        """
        self._held = []
        event.listen(self._conn, "before_execute", self._before_execute)
        try:
            yield
        finally:
            event.remove(self._conn, "before_execute", self._before_execute)
            self._held = None

    def send(self, *, commit: bool = False) -> None:
        """Send the held writes in order; with commit, COMMIT in the same round trip.

        Only PostgreSQL folds the COMMIT in; elsewhere the caller's transaction commits as
        usual afterwards.
        """
        held = self._held or []
        if self._held is not None:
            self._held = []
        driver: Any = self._conn.connection.driver_connection
        dialect = self._conn.dialect
        with driver_errors(self._conn):
            self._send(driver, dialect, held, commit=commit)

    @staticmethod
    def _send(
        driver: Any, dialect: Dialect, held: list[tuple[UpdateBase, list[Row]]], *, commit: bool
    ) -> None:
        if dialect.name != "postgresql":
            cursor = driver.cursor()
            try:
                for statement, rows in held:
                    sql, fixed = driver_sql(dialect, statement, list(rows[0]))
                    cursor.executemany(sql, [{**fixed, **row} for row in rows] if fixed else rows)
            finally:
                cursor.close()
            return
        if not held and not commit:
            return
        with driver.pipeline(), driver.cursor() as cursor:
            for statement, rows in held:
                sql, fixed = driver_sql(dialect, statement, list(rows[0]))
                cursor.executemany(sql, [{**fixed, **row} for row in rows] if fixed else rows)
            if commit:
                # psycopg sends COMMIT and a Sync: the writes and the commit are one round
                # trip. SQLAlchemy's own commit afterwards finds the connection idle and
                # does nothing.
                driver.commit()

    def _before_execute(self, *_args: Any, **_kwargs: Any) -> None:
        if self._held:
            self.send()
