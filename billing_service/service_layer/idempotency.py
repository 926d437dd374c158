"""Idempotent execution of mutating use cases (DESIGN §4.3, Stripe's semantics).

The idempotency record is written in the same transaction as the effect it describes, so either
both exist or neither does (§4.6). A second call with the key finds the record and gets the
stored answer, flagged as a replay; with a different request it is refused.

Two concurrent calls with one key: on SQLite writers take turns, so the second finds the
record. On PostgreSQL (READ COMMITTED) the second may read "no record", queue on the account
lock, and run the work again once the first commits. If that work succeeds, inserting the
record hits the primary key and the unit of work retries; if it is refused (the first call
spent the credits, or committed the hold), the record is read again, and now that the first
has committed it is there: the transaction is retried and replays. Either way the caller gets
the first answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from billing_service.db import dataclass_json as codec
from billing_service.db.idempotency import IdempotencyRecord
from billing_service.domain.clock import Clock
from billing_service.domain.errors import DomainError, IdempotencyKeyReused
from billing_service.domain.validation import check_idempotency_key
from billing_service.service_layer.unit_of_work import Database, RetryTransaction, Tx

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
        try:
            result = work(tx, now)
        except DomainError:
            if tx.idempotency.get(key) is not None:
                raise RetryTransaction from None
            raise
        tx.idempotency.add(key, IdempotencyRecord(operation, digest, codec.dumps(result)), now)
        return Outcome(result, replayed=False)

    return db.write(attempt)
