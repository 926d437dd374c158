"""What every use case needs: the database, the clock and the hold policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from billing_service.domain.clock import Clock
from billing_service.service_layer.unit_of_work import Database


@dataclass(frozen=True)
class HoldPolicy:
    """How long holds last when the caller does not say, and at most."""

    default_ttl: timedelta = timedelta(minutes=15)
    max_ttl: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class AppContext:
    """Shared, immutable dependencies of the use cases."""

    db: Database
    clock: Clock
    holds: HoldPolicy
