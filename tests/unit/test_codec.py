"""The codec behind stored answers and request fingerprints. Stored idempotency records are
compared against fingerprints computed by later versions of the server, so the encoding must
never drift: a pinned fingerprint catches any change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from billing_service.db import dataclass_json as codec
from billing_service.domain.model import EntryContext, EntryKind
from billing_service.service_layer.idempotency import fingerprint


def test_a_request_fingerprint_is_stable_across_versions() -> None:
    request = {
        "account_id": "acct-1",
        "amount": 1_234_500,
        "context": EntryContext(
            idempotency_key="k1", feature="chat", request_id="r1", metadata={"b": "2", "a": "1"}
        ),
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "rate": Decimal("0.0025"),
        "lines": ("x", 1),
    }
    # Computed by the encoder as it stood before its per-type converters (commit 239f8d2).
    assert fingerprint("SpendCredits", request) == (
        "978dbeacd7eb9297e048a889d7946aa526af6cc3599f77d39d92600d442e779c"
    )


@dataclass(frozen=True)
class Inner:
    kind: EntryKind
    at: datetime | None
    price: Decimal


@dataclass(frozen=True)
class Outer:
    name: str
    flag: bool
    items: tuple[Inner, ...]
    labels: dict[str, str]
    nothing: None = None


def test_to_plain_converts_each_kind_of_value() -> None:
    moment = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    value = Outer(
        name="n",
        flag=True,
        items=(Inner(EntryKind.SPEND, moment, Decimal("1.50")), Inner(EntryKind.GRANT, None, 0)),  # type: ignore[arg-type]
        labels={"k": "v"},
    )
    assert codec.to_plain(value) == {
        "name": "n",
        "flag": True,
        "items": [
            {"kind": "SPEND", "at": moment.isoformat(), "price": "1.50"},
            {"kind": "GRANT", "at": None, "price": 0},
        ],
        "labels": {"k": "v"},
        "nothing": None,
    }
    assert codec.loads(Outer, codec.dumps(value)).items[0] == value.items[0]
