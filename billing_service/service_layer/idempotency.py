"""Idempotent execution of mutating use cases (DESIGN §4.3, Stripe's semantics).

The idempotency record is written in the same transaction as the effect it describes, so either
both exist or neither does (§4.6). A second call with the key finds the record and gets the
stored answer, flagged as a replay; with a different request it is refused. Two concurrent
calls with one key race on the record's primary key: the loser's transaction rolls back and is
retried by the unit of work, and then finds the winner's record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from billing_service.db.idempotency import IdempotencyRecord
from billing_service.domain.clock import Clock
from billing_service.domain.errors import IdempotencyKeyReused
from billing_service.domain.validation import check_idempotency_key
from billing_service.service_layer import codec
from billing_service.service_layer.unit_of_work import Database, Tx

R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """A use case's answer and whether it was replayed from an earlier call."""

    result: R
    replayed: bool


def fingerprint(operation: str, request: Mapping[str, Any]) -> str:
    """A stable hash of what was asked, excluding the key itself."""
    text = json.dumps([operation, codec.to_plain(request)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run_idempotent(
    db: Database,
    clock: Clock,
    *,
    operation: str,
    key: str,
    request: Mapping[str, Any],
    result_type: type[R],
    work: Callable[[Tx, datetime], R],
) -> Outcome[R]:
    """Run work once per key; later calls with the key get the first answer back."""
    check_idempotency_key(key)
    digest = fingerprint(operation, request)

    def attempt(tx: Tx) -> Outcome[R]:
        record = tx.idempotency.get(key)
        if record is not None:
            if record.operation != operation or record.fingerprint != digest:
                raise IdempotencyKeyReused(operation)
            return Outcome(codec.loads(result_type, record.response), replayed=True)
        now = clock.now()
        result = work(tx, now)
        tx.idempotency.add(key, IdempotencyRecord(operation, digest, codec.dumps(result)), now)
        return Outcome(result, replayed=False)

    return db.write(attempt)
