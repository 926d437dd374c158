"""Price book versions by number, kept per process: a version never changes once written.

Which version is in force is also cached, for estimates that name no account: the list of
versions and their effective times is read again at most every `refresh_seconds`, and at once
after this process adds a version. A version added by another replica therefore reaches this
one's account-free estimates within `refresh_seconds`; holds and commits always ask the database.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from billing_service.domain.errors import NotFound
from billing_service.domain.pricing import PriceBook

if TYPE_CHECKING:
    from billing_service.service_layer.unit_of_work import Database, Tx


class PriceBookCache:
    """Whole price book versions by number; safe to share between threads."""

    def __init__(self, refresh_seconds: float = 1.0) -> None:
        self._books: dict[int, PriceBook] = {}
        self._lock = threading.Lock()
        self._refresh = refresh_seconds
        self._starts: list[tuple[datetime, int]] | None = None
        self._read_at = 0.0
        # Bumped by forget_versions, so a list read before a new version committed is not
        # stored after it.
        self._generation = 0

    def get(self, tx: Tx, version: int) -> PriceBook:
        """The version, read from the database the first time it is asked for."""
        book = self._books.get(version)
        if book is None:
            book = tx.price_books.load(version)
            if book is None:
                raise NotFound("PRICE_BOOK", "version", str(version))
            with self._lock:
                self._books[version] = book
        return book

    def in_force(self, db: Database, at: datetime) -> PriceBook:
        """The version in force at `at`, touching the database only to refresh the list of
        versions (at most every refresh_seconds) or to load a version not seen yet."""
        starts = self._fresh_starts()
        if starts is None:
            read_at, generation = time.monotonic(), self._generation
            starts = db.read(lambda tx: tx.price_books.version_starts())
            with self._lock:
                if generation == self._generation:
                    self._starts, self._read_at = starts, read_at
        chosen = _chosen(starts, at)
        book = self._books.get(chosen)
        if book is None:
            return db.read(lambda tx: self.get(tx, chosen))
        return book

    def in_force_cached(self, at: datetime) -> PriceBook | None:
        """in_force when it needs no database: None when the list of versions is due for a
        refresh or the version in force was never loaded."""
        starts = self._fresh_starts()
        return None if starts is None else self._books.get(_chosen(starts, at))

    def _fresh_starts(self) -> list[tuple[datetime, int]] | None:
        starts = self._starts
        if starts is None or time.monotonic() - self._read_at >= self._refresh:
            return None
        return starts

    def forget_versions(self) -> None:
        """Read the list of versions again on next use (this process added one)."""
        with self._lock:
            self._starts = None
            self._generation += 1


def _chosen(starts: list[tuple[datetime, int]], at: datetime) -> int:
    """The version in force at `at` among (effective time, version) pairs."""
    chosen = max((version for start, version in starts if start <= at), default=None)
    if chosen is None:
        raise NotFound("PRICE_BOOK", "version", "in force")
    return chosen
