"""The sweeper thread: expires holds and buckets, activates pending grants on time, grants
the monthly allowances of yearly plans when they fall due, and deletes idempotency records past
their retention."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from billing_service.metrics import Metrics
from billing_service.service_layer.allowances import grant_due_allowances
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.sweeping import prune_idempotency_records, sweep_due_accounts

log = logging.getLogger(__name__)

# Idempotency records deleted per transaction: short enough not to hold up the writers.
PRUNE_BATCH = 1000


@dataclass(frozen=True)
class SweepPass:
    """What one pass did; `more` when a batch came back full, so the next runs at once."""

    swept: int
    granted: int
    pruned: int
    more: bool


class Sweeper:
    """Runs sweep passes every interval until stopped; a full batch runs again at once."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        interval: float,
        batch: int,
        retention: timedelta | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """retention: how long idempotency records are kept; None keeps them for good."""
        self._ctx = ctx
        self._metrics = metrics
        self._interval = interval
        self._batch = batch
        self._retention = retention
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

    def run_once(self) -> SweepPass:
        """One pass: due accounts, due allowances, then one batch of expired idempotency
        records."""
        swept = sweep_due_accounts(self._ctx, batch=self._batch)
        if self._metrics is not None:
            self._metrics.swept_accounts.inc(swept)
        if swept:
            log.info("swept accounts", extra={"accounts": swept})
        granted = grant_due_allowances(self._ctx, limit=self._batch)
        if granted:
            log.info("granted monthly allowances of yearly plans", extra={"allowances": granted})
        pruned = 0
        if self._retention is not None:
            pruned = prune_idempotency_records(
                self._ctx, retention=self._retention, batch=PRUNE_BATCH
            )
            if self._metrics is not None:
                self._metrics.pruned_idempotency_records.inc(pruned)
            if pruned:
                log.info("deleted expired idempotency records", extra={"records": pruned})
        more = swept >= self._batch or granted >= self._batch or pruned >= PRUNE_BATCH
        return SweepPass(swept, granted, pruned, more)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                full = self.run_once().more
            except Exception:
                log.exception("sweep pass failed; retrying after the interval")
                if self._metrics is not None:
                    self._metrics.sweep_failures.inc()
                full = False
            if not full:
                self._stop.wait(self._interval)
