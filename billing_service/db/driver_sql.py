"""SQLAlchemy statements compiled once to the driver's own SQL, for the hot paths that skip
SQLAlchemy's per-execution work and run them on the DBAPI connection.

SQLite's driver takes named parameters (`:name`); psycopg takes SQLAlchemy's default for
PostgreSQL (`%(name)s`). Either way the answer is the SQL and the values of the parameters the
statement fixed itself (literals bound by SQLAlchemy), which each execution must pass too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.expression import ClauseElement

POSTGRESQL: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
"""PostgreSQL's dialect, for statements that only ever run there."""

# By (dialect, statement, keys). Only module-level statements come here, so it stays small.
_COMPILED: dict[tuple[str, ClauseElement, tuple[str, ...]], tuple[str, dict[str, Any]]] = {}


def driver_sql(
    dialect: Dialect, statement: ClauseElement, keys: Sequence[str] = ()
) -> tuple[str, dict[str, Any]]:
    """The statement as the driver's SQL with named parameters, and its fixed parameters.

    keys, for an INSERT or UPDATE without explicit values, are the row's keys: it writes
    exactly those columns. Compiled once per dialect, statement and keys.
    """
    cache_key = (dialect.name, statement, tuple(keys))
    found = _COMPILED.get(cache_key)
    if found is None:
        target = sqlite_dialect(paramstyle="named") if dialect.name == "sqlite" else dialect
        compiled: Compiled = statement.compile(
            dialect=target, column_keys=list(keys) if keys else None
        )
        found = (str(compiled), {k: v for k, v in compiled.params.items() if k not in keys})
        _COMPILED[cache_key] = found
    return found
