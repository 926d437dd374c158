"""Engines for SQLite (the default, one node) and PostgreSQL (production), set up alike.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with BEGIN IMMEDIATE
so writers queue for the one write lock instead of failing to upgrade a read lock. PostgreSQL
runs at READ COMMITTED through psycopg 3; per-account row locks order the writers, and
every statement is planned for its arguments (plan_cache_mode = force_custom_plan).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """Pick our drivers: psycopg 3 for plain postgresql:// URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    """True when the URL names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def build_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for url, with the per-backend settings the ledger relies on."""
    url = normalize_url(url)
    if is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip on every call. A connection that died (database
        # restart) fails its first statement instead, the call answers UNAVAILABLE having
        # written nothing, the pool is invalidated, and the client's retry gets a fresh one.
        pool_pre_ping=False,
        # A database that is down answers UNAVAILABLE within seconds instead of the kernel's
        # minutes-long connect timeout.
        connect_args={"prepare_threshold": 2, "connect_timeout": 5},
    )
    _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Plan every execution of a prepared statement for its arguments and the tables'
        # current size. A generic plan, cached for the connection's life, is made once: made
        # while a table was small it kept scanning the whole table after it grew (measured
        # from an empty database, Reserve+Commit lost 13 % of its rate in a minute). Set here
        # rather than as a startup option, which PgBouncer refuses; behind a pooler in
        # transaction mode a SET does not stick either: set it on the role (README).
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_connection.commit()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers (execution option read_only) keep WAL's concurrent snapshot reads; a read of
        # one statement (single_statement) needs no transaction: the statement is its own.
        options = connection.get_execution_options()
        if options.get("single_statement", False):
            return
        connection.exec_driver_sql(
            "BEGIN" if options.get("read_only", False) else "BEGIN IMMEDIATE"
        )
