"""The sweeper thread: expires holds and buckets, activates pending grants on time, and grants
the monthly allowances of yearly plans when they fall due."""

from __future__ import annotations

import logging
import threading

from billing_service.metrics import Metrics
from billing_service.service_layer.allowances import grant_due_allowances
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.sweeping import sweep_due_accounts

log = logging.getLogger(__name__)


class Sweeper:
    """Runs sweep passes every interval until stopped; a full batch runs again at once."""

    def __init__(
        self, ctx: AppContext, *, interval: float, batch: int, metrics: Metrics | None = None
    ) -> None:
        self._ctx = ctx
        self._metrics = metrics
        self._interval = interval
        self._batch = batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> None:
        """Start sweeping in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop and wait for its current pass to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def run_once(self) -> int:
        """One pass; returns the larger of the accounts swept and the allowances granted, so
        a full batch of either runs again at once."""
        swept = sweep_due_accounts(self._ctx, batch=self._batch)
        if self._metrics is not None:
            self._metrics.swept_accounts.inc(swept)
        if swept:
            log.info("swept accounts", extra={"accounts": swept})
        granted = grant_due_allowances(self._ctx, limit=self._batch)
        if granted:
            log.info("granted monthly allowances of yearly plans", extra={"allowances": granted})
        return max(swept, granted)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                full = self.run_once() >= self._batch
            except Exception:
                log.exception("sweep pass failed; retrying after the interval")
                if self._metrics is not None:
                    self._metrics.sweep_failures.inc()
                full = False
            if not full:
                self._stop.wait(self._interval)
