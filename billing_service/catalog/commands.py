"""The catalog commands behind `creditline catalog push|pull` and the start-up seed: load a
catalog file into the database, sync it with Stripe, and record the Stripe ids it is sold at.

Stripe is called outside any database transaction (a transaction never waits on the
network). Push checks the file against the database, pushes to Stripe, and only then writes
the items with the Stripe ids they are sold at, in one transaction: the credits a purchase
grants never change before the price that sells them does. If Stripe fails part-way the
database is untouched, and running the same push again finishes the job (push is idempotent).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import stripe

from billing_service.catalog import catalog_file
from billing_service.db.named_locks import Held
from billing_service.domain.catalog import CatalogItem
from billing_service.domain.clock import Clock
from billing_service.domain.errors import FailedPrecondition, stripe_not_configured
from billing_service.service_layer.unit_of_work import Database, Tx
from billing_service.stripe.catalog_sync import Progress, PushReport, pull, push


def push_catalog(
    db: Database,
    stripe_client: stripe.StripeClient | None,
    path: Path | None,
    clock: Clock,
    progress: Progress,
) -> PushReport:
    """Load a catalog file (the shipped default when path is None) into the database, push
    every item to Stripe, and record the product and price each is sold at.

    Raises CatalogFileError for a bad file (nothing is written), FailedPrecondition when Stripe
    is not configured or refuses, or when a lookup key belongs to another item in the database,
    and StripeUnavailable when Stripe cannot be reached.
    """
    if stripe_client is None:
        raise stripe_not_configured("catalog push")
    items = catalog_file.read(path or catalog_file.DEFAULT_PATH)
    # Refuse a clashing lookup key before Stripe is touched; record() checks again.
    db.read(lambda tx: _check_lookup_keys(tx, items))
    with _one_sync_at_a_time(db, progress) as lock:
        report = push(stripe_client, items, progress=progress)

        def record(tx: Tx) -> None:
            _upsert_all(tx, items, clock)
            now = clock.now()
            for pushed in report.items:
                tx.catalog.set_stripe_ids(
                    pushed.item_id, product_id=pushed.product_id, price_id=pushed.price_id, now=now
                )

        lock.check()
        db.write(record)
    return report


def pull_catalog(
    db: Database, stripe_client: stripe.StripeClient | None, clock: Clock, progress: Progress
) -> list[CatalogItem]:
    """Read the catalog Stripe sells and write it, with its Stripe ids, into the database.

    Items the database has and Stripe does not are left as they are.
    """
    if stripe_client is None:
        raise stripe_not_configured("catalog pull")
    with _one_sync_at_a_time(db, progress) as lock:
        items = pull(stripe_client, progress=progress)
        lock.check()
        db.write(lambda tx: _upsert_all(tx, items, clock))
    return items


def _one_sync_at_a_time(db: Database, progress: Progress) -> AbstractContextManager[Held]:
    """Pushes and pulls take turns, from Stripe's first call to the database write: two that
    overlapped could each find Stripe as they left it, and the one writing the database last
    could point it at a price the other had just replaced, no longer on sale."""
    return db.exclusive(
        "catalog-sync",
        waiting=lambda: progress("waiting for another catalog push or pull to finish"),
    )


def seed_default_catalog(db: Database, clock: Clock) -> bool:
    """Load the shipped catalog when the catalog has never been loaded; True if it was."""
    items = catalog_file.read(catalog_file.DEFAULT_PATH)

    def seed(tx: Tx) -> bool:
        if not tx.catalog.is_empty():
            return False
        _upsert_all(tx, items, clock)
        return True

    return db.write(seed)


def _upsert_all(tx: Tx, items: list[CatalogItem], clock: Clock) -> None:
    _check_lookup_keys(tx, items)
    now = clock.now()
    for item in items:
        tx.catalog.upsert(item, now)


def _check_lookup_keys(tx: Tx, items: list[CatalogItem]) -> None:
    for item in items:
        # Lookup keys are unique in the table: name the clash instead of failing on the index.
        holder = tx.catalog.by_stripe_price("", item.lookup_key)
        if holder is not None and holder.id != item.id:
            raise FailedPrecondition(
                f"lookup key {item.lookup_key!r} of {item.id!r} already belongs to catalog item "
                f"{holder.id!r}",
                reason="CATALOG_LOOKUP_KEY_TAKEN",
                lookup_key=item.lookup_key,
                item_id=holder.id,
            )
