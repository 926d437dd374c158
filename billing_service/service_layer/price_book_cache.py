"""Price book versions by number, kept per process: a version never changes once written."""

from __future__ import annotations

import threading

from billing_service.domain.errors import NotFound
from billing_service.domain.pricing import PriceBook
from billing_service.service_layer.unit_of_work import Tx


class PriceBookCache:
    """Whole price book versions by number; safe to share between threads."""

    def __init__(self) -> None:
        self._books: dict[int, PriceBook] = {}
        self._lock = threading.Lock()

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
