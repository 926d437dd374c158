"""Writes held back to the end of a transaction, then sent together on the driver connection.

Group commit's flush writes to five tables for a whole batch of calls. Sent one statement at
a time through SQLAlchemy, that is one round trip each, and each return from the network has
to win the GIL back from every request thread. Held back instead, they go in one PostgreSQL
pipeline together with the COMMIT: one round trip for all of them. On PostgreSQL each group
of rows is also one statement over arrays (INSERT ... SELECT FROM unnest, UPDATE ... FROM
unnest) rather than a statement per row, which is where the driver spent its Python. On
SQLite (no network) they are executemany calls on the driver connection, which skips
SQLAlchemy's per-statement Python.

Invariant: the transaction reads what it wrote. Any statement executed through SQLAlchemy
on the connection while writes are held sends them first (a before_execute hook on the
engine, installed once), so a read never misses a held write and the order of writes is the
order they were asked for.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Dialect,
    Engine,
    Integer,
    SmallInteger,
    String,
    Table,
    bindparam,
    event,
    insert,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert, Update, UpdateBase

from billing_service.db.driver_sql import driver_sql

Row = Mapping[str, Any]


@dataclass(frozen=True)
class _KeyedUpdate:
    table: Table
    key_column: str
    key_param: str
    values: dict[str, str]  # column -> parameter


# The statements with an array form for PostgreSQL, and those forms once built.
_KEYED: dict[UpdateBase, _KeyedUpdate] = {}
_INSERTS: dict[UpdateBase, Table] = {}
_ARRAYS: dict[tuple[UpdateBase, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}


def table_insert(table: Table) -> Insert:
    """INSERT INTO table, with the columns the rows give, as a statement that write-behind
    can also send for many rows at once."""
    statement = insert(table)
    _INSERTS[statement] = table
    return statement


def keyed_update(table: Table, key: tuple[str, str], values: Mapping[str, str]) -> Update:
    """UPDATE table SET column = :param ... WHERE key column = :key param, as a statement
    that write-behind can also send for many rows at once.

    key is (column, parameter); values maps each column set to its parameter.
    """
    column, param = key
    statement = (
        update(table)
        .where(table.c[column] == bindparam(param))
        .values({name: bindparam(p) for name, p in values.items()})
    )
    _KEYED[statement] = _KeyedUpdate(table, column, param, dict(values))
    return statement


# The arrays go in binary (the %(name)b placeholders): psycopg's text form escapes every
# element with a regular expression, which cost more than the executemany it replaces.
def _array_type(table: Table, column: str) -> str:
    kind = table.c[column].type
    for python_type, name in _ARRAY_TYPES:
        if isinstance(kind, python_type):
            return name
    raise TypeError(f"{table.name}.{column}: no array form for {kind!r}")


# Most specific first: BigInteger and SmallInteger are Integers.
_ARRAY_TYPES: tuple[tuple[type, str], ...] = (
    (BigInteger, "bigint"),
    (SmallInteger, "smallint"),
    (Integer, "integer"),
    (Boolean, "boolean"),
    (String, "text"),  # Text is a String
)


def _array_sql(statement: UpdateBase, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """The statement for many rows at once, over one array per parameter, and the
    parameters in order; None when it has no array form."""
    cache_key = (statement, keys)
    found = _ARRAYS.get(cache_key)
    if found is not None:
        return found
    keyed = _KEYED.get(statement)
    if keyed is not None:
        table, params = keyed.table, (keyed.key_param, *keyed.values.values())
        columns = (keyed.key_column, *keyed.values)
        arrays = ", ".join(
            f"%({p})b::{_array_type(table, c)}[]" for p, c in zip(params, columns, strict=True)
        )
        sets = ", ".join(f'"{c}" = v."{c}"' for c in keyed.values)
        names = ", ".join(f'"{c}"' for c in columns)
        sql = (
            f'UPDATE "{table.name}" SET {sets} FROM unnest({arrays}) AS v({names}) '  # noqa: S608 - names from the table's metadata
            f'WHERE "{table.name}"."{keyed.key_column}" = v."{keyed.key_column}"'
        )
        found = (sql, params)
    elif statement in _INSERTS:
        table = _INSERTS[statement]
        arrays = ", ".join(f"%({k})b::{_array_type(table, k)}[]" for k in keys)
        names = ", ".join(f'"{k}"' for k in keys)
        picked = ", ".join(f'v."{k}"' for k in keys)
        # WITH ORDINALITY ... ORDER BY: rows go in (and take sequence numbers) in list order.
        sql = (
            f'INSERT INTO "{table.name}" ({names}) SELECT {picked} FROM unnest({arrays}) '  # noqa: S608 - names from the table's metadata
            f"WITH ORDINALITY AS v({names}, ordinal) ORDER BY v.ordinal"
        )
        found = (sql, keys)
    else:
        return None
    _ARRAYS[cache_key] = found
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
        _hook(self._conn.engine)
        self._held = []
        info = self._conn.info  # kept: a lost connection refuses .info until rolled back
        info[_HOLDING] = self
        try:
            yield
        finally:
            info.pop(_HOLDING, None)
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
                keys = tuple(rows[0])
                arrays = _array_sql(statement, keys) if len(rows) > 1 else None
                keyed = _KEYED.get(statement)
                if arrays is not None and (
                    keyed is None or len({row[keyed.key_param] for row in rows}) == len(rows)
                ):
                    # One statement for all the rows (an UPDATE's keys are distinct: a key
                    # given twice would update its row only once).
                    sql, params = arrays
                    cursor.execute(sql, {p: [row[p] for row in rows] for p in params})
                    continue
                sql, fixed = driver_sql(dialect, statement, list(keys))
                cursor.executemany(sql, [{**fixed, **row} for row in rows] if fixed else rows)
            if commit:
                # COMMIT as one more pipelined statement: the pipeline's closing Sync is the
                # only wait, so the writes and the commit are one round trip (driver.commit()
                # would sync once more). SQLAlchemy's own commit afterwards finds the
                # connection idle and does nothing.
                cursor.execute(b"COMMIT")


# Per-connection info key of the Writes holding writes on it.
_HOLDING = "creditline.held_writes"
_HOOKED: weakref.WeakSet[Engine] = weakref.WeakSet()


def _hook(engine: Engine) -> None:
    """Install the before_execute hook on the engine once (listening per transaction costs
    more than the flush it serves)."""
    if engine not in _HOOKED:
        event.listen(engine, "before_execute", _send_held_first)
        _HOOKED.add(engine)


def _send_held_first(conn: Connection, *_args: Any, **_kwargs: Any) -> None:
    holder = conn.info.get(_HOLDING)
    if holder is not None and holder._held:
        holder.send()
