"""Assembling the process: engine, schema check, use-case context, server and jobs."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from billing_service.db import migrate
from billing_service.db.engine import build_engine, is_sqlite
from billing_service.domain.clock import Clock, SystemClock
from billing_service.service_layer.context import AppContext, BillingPolicy, HoldPolicy
from billing_service.service_layer.group_commit import GroupCommitter
from billing_service.service_layer.price_book_cache import PriceBookCache
from billing_service.service_layer.unit_of_work import Database
from billing_service.settings import Settings
from billing_service.stripe.client import StripeBilling, build_stripe_client

log = logging.getLogger(__name__)


class SchemaOutOfDate(RuntimeError):
    """Raised when a PostgreSQL database needs `creditline migrate` before serving."""


def open_engine(settings: Settings) -> Engine:
    """The engine, with the schema at the newest revision.

    A SQLite file (one node, nothing else reads it) is migrated on the spot; PostgreSQL is
    shared by replicas, so it is migrated only by the explicit `creditline migrate`.
    """
    engine = build_engine(settings.database_url, pool_size=settings.db_pool_size)
    if migrate.is_current(engine):
        return engine
    if is_sqlite(settings.database_url):
        log.info("migrating the SQLite database to the newest schema")
        migrate.upgrade(engine)
        return engine
    engine.dispose()
    raise SchemaOutOfDate("the database schema is not current: run `creditline migrate` first")


def make_context(engine: Engine, settings: Settings, clock: Clock | None = None) -> AppContext:
    """The use cases' shared dependencies; Stripe only when a secret key is configured."""
    stripe_client = build_stripe_client(settings)
    return AppContext(
        db=Database(engine),
        clock=clock or SystemClock(),
        holds=HoldPolicy(default_ttl=settings.hold_default_ttl, max_ttl=settings.hold_max_ttl),
        books=PriceBookCache(settings.price_book_refresh_seconds),
        writes=GroupCommitter(settings.write_lanes),
        billing=BillingPolicy(
            freeze_allowance_when_past_due=settings.freeze_allowance_when_past_due
        ),
        stripe=StripeBilling(stripe_client) if stripe_client is not None else None,
    )
