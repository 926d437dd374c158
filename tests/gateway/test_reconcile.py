"""reconcile(): replaying Stripe's event list through the sink, counting, and subscription drift.

Stripe is a stub exposing what reconcile uses of a StripeClient (`v1.events.list`,
`v1.subscriptions.list`, `.auto_paging_iter()`); the real package against a fake Stripe server
is the end-to-end suite's. Creditline is an idempotent fake keyed like the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import stripe
from creditline import InvalidArgument, NotFound, Unavailable
from creditline.v1 import billing_service_pb2, stripe_event_pb2, subscription_pb2
from google.protobuf import timestamp_pb2
from pydantic import SecretStr

from tests.gateway import shapes
from tests.gateway.shapes import DEC_1, NOV_1
from webhook_gateway import reconcile as reconcile_module
from webhook_gateway.reconcile import SubscriptionDrift, build_stripe_client, reconcile
from webhook_gateway.settings import GatewaySettings, SettingError
from webhook_gateway.translate import HANDLED_TYPES

SINCE = datetime.fromtimestamp(NOV_1, UTC)

APPLIED = stripe_event_pb2.STRIPE_EVENT_OUTCOME_APPLIED
STALE = stripe_event_pb2.STRIPE_EVENT_OUTCOME_STALE


class _Listing:
    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def auto_paging_iter(self) -> Iterator[Any]:
        return iter(self._items)


class _Resource:
    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.params: list[dict[str, Any]] = []

    def list(self, params: dict[str, Any] | None = None, options: object = None) -> _Listing:
        self.params.append(params or {})
        return _Listing(self.items)


class _V1:
    def __init__(self, events: list[Any], subscriptions: list[Any]) -> None:
        self.events = _Resource(events)
        self.subscriptions = _Resource(subscriptions)


class StubStripe:
    """What reconcile reads of a StripeClient; lists come newest first, as Stripe's do."""

    def __init__(self, events: list[Any], subscriptions: list[Any] | None = None) -> None:
        self.v1 = _V1(events, subscriptions or [])

    def client(self) -> stripe.StripeClient:
        return cast(stripe.StripeClient, self)


@dataclass
class IdempotentSink:
    """Applies each key once and replays its first response, as the server does."""

    outcomes: dict[str, stripe_event_pb2.StripeEventOutcome.ValueType] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    subscriptions: list[subscription_pb2.Subscription] = field(default_factory=list)
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    stored: dict[str, billing_service_pb2.ApplyStripeEventResponse] = field(default_factory=dict)

    def apply_stripe_event(
        self,
        event: stripe_event_pb2.StripeEvent,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> billing_service_pb2.ApplyStripeEventResponse:
        self.calls.append((event.event_id, idempotency_key))
        if event.event_id in self.errors:
            raise self.errors[event.event_id]
        key = idempotency_key or ""
        if key not in self.stored:
            outcome = self.outcomes.get(event.event_id, APPLIED)
            self.stored[key] = billing_service_pb2.ApplyStripeEventResponse(outcome=outcome)
        return self.stored[key]

    def iter_subscriptions(self) -> Iterator[subscription_pb2.Subscription]:
        return iter(self.subscriptions)


def _refund(event_id: str, created: int) -> dict[str, Any]:
    return shapes.event("charge.refunded", shapes.charge(), event_id=event_id, created=created)


def _ours(
    subscription_id: str = "sub_1SWdGt2eZvKYlo2CaBcDeFgH",
    status: subscription_pb2.SubscriptionStatus.ValueType = (
        subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE
    ),
    period_end: int = DEC_1,
) -> subscription_pb2.Subscription:
    return subscription_pb2.Subscription(
        subscription_id=subscription_id,
        account_id="acct_42",
        plan_id="starter_monthly",
        status=status,
        current_period_start_time=timestamp_pb2.Timestamp(seconds=NOV_1),
        current_period_end_time=timestamp_pb2.Timestamp(seconds=period_end),
    )


def _run(stub: StubStripe, sink: IdempotentSink) -> reconcile_module.ReconcileReport:
    lines: list[str] = []
    return reconcile(stub.client(), sink, SINCE, progress=lines.append)


def test_lists_events_since_the_time_and_applies_them_oldest_first() -> None:
    stub = StubStripe(
        [_refund("evt_3", NOV_1 + 30), _refund("evt_2", NOV_1 + 20), _refund("evt_1", NOV_1 + 10)]
    )
    sink = IdempotentSink()

    report = _run(stub, sink)

    assert stub.v1.events.params == [
        {"created": {"gte": NOV_1}, "types": sorted(HANDLED_TYPES), "limit": 100}
    ]
    assert sink.calls == [
        ("evt_1", "stripe:evt_1"),
        ("evt_2", "stripe:evt_2"),
        ("evt_3", "stripe:evt_3"),
    ]
    assert report.events_listed == 3
    assert report.outcomes == {"applied": 3}
    assert report.succeeded


def test_a_second_run_replays_with_the_same_keys_and_changes_nothing() -> None:
    stub = StubStripe([_refund("evt_2", NOV_1 + 20), _refund("evt_1", NOV_1 + 10)])
    sink = IdempotentSink()

    first = _run(stub, sink)
    stored = dict(sink.stored)
    second = _run(stub, sink)

    assert [key for _, key in sink.calls] == ["stripe:evt_1", "stripe:evt_2"] * 2
    assert sink.stored == stored
    assert first.outcomes == second.outcomes == {"applied": 2}


def test_outcomes_are_counted_apart_and_unhandled_events_skipped() -> None:
    one_off = shapes.invoice(parent=None, billing_reason="manual")
    stub = StubStripe(
        [
            _refund("evt_4", NOV_1 + 40),
            shapes.event("invoice.paid", one_off, event_id="evt_3", created=NOV_1 + 30),
            _refund("evt_2", NOV_1 + 20),
            _refund("evt_1", NOV_1 + 10),
        ]
    )
    sink = IdempotentSink(
        outcomes={"evt_1": stripe_event_pb2.STRIPE_EVENT_OUTCOME_IGNORED, "evt_2": STALE}
    )

    report = _run(stub, sink)

    assert report.not_handled == 1
    assert report.outcomes == {"ignored": 1, "stale": 1, "applied": 1}
    assert [event_id for event_id, _ in sink.calls] == ["evt_1", "evt_2", "evt_4"]


def test_refused_and_untranslatable_events_are_reported_and_the_rest_applied() -> None:
    broken = shapes.event(
        "charge.refunded", shapes.charge(amount=None), event_id="evt_2", created=NOV_1 + 20
    )
    stub = StubStripe(
        [
            _refund("evt_4", NOV_1 + 40),
            _refund("evt_3", NOV_1 + 30),
            broken,
            _refund("evt_1", NOV_1 + 10),
        ]
    )
    sink = IdempotentSink(
        errors={
            "evt_1": NotFound("account acct_42 not found", reason="ACCOUNT_NOT_FOUND"),
            "evt_3": InvalidArgument("event.charge.amount is missing"),
        }
    )

    report = _run(stub, sink)

    assert [(f.event_id, f.type) for f in report.failed] == [
        ("evt_1", "charge.refunded"),
        ("evt_2", "charge.refunded"),
        ("evt_3", "charge.refunded"),
    ]
    assert "ACCOUNT_NOT_FOUND" in report.failed[0].error
    assert "data.object.amount is missing" in report.failed[1].error
    assert report.outcomes == {"applied": 1}
    assert not report.stopped_early
    assert not report.succeeded


def test_an_unreachable_service_stops_the_run() -> None:
    stub = StubStripe(
        [_refund("evt_3", NOV_1 + 30), _refund("evt_2", NOV_1 + 20), _refund("evt_1", NOV_1 + 10)],
        [shapes.subscription()],
    )
    sink = IdempotentSink(errors={"evt_2": Unavailable("connection refused")})

    report = _run(stub, sink)

    assert [event_id for event_id, _ in sink.calls] == ["evt_1", "evt_2"]
    assert report.stopped_early
    assert not report.succeeded
    assert report.drift == ()
    assert stub.v1.subscriptions.params == []


def test_no_drift_when_both_sides_agree() -> None:
    stub = StubStripe([], [shapes.subscription()])
    sink = IdempotentSink(subscriptions=[_ours()])

    report = _run(stub, sink)

    assert stub.v1.subscriptions.params == [{"status": "all", "limit": 100}]
    assert report.drift == ()
    assert report.succeeded


def test_drift_in_status_and_period_end() -> None:
    stub = StubStripe([], [shapes.subscription(status="past_due")])
    sink = IdempotentSink(subscriptions=[_ours(period_end=NOV_1)])

    report = _run(stub, sink)

    assert report.drift == (
        SubscriptionDrift("sub_1SWdGt2eZvKYlo2CaBcDeFgH", "status", "past_due", "active"),
        SubscriptionDrift(
            "sub_1SWdGt2eZvKYlo2CaBcDeFgH",
            "current_period_end",
            "2026-12-01T00:00:00+00:00",
            "2026-11-01T00:00:00+00:00",
        ),
    )
    assert report.succeeded  # drift is reported, not a failure


def test_subscriptions_on_one_side_only() -> None:
    ended_long_ago = shapes.subscription(
        id="sub_old", status="canceled", ended_at=NOV_1 - 86_400, canceled_at=NOV_1 - 86_400
    )
    ended_in_the_window = shapes.subscription(
        id="sub_recent", status="canceled", ended_at=NOV_1 + 86_400, canceled_at=NOV_1
    )
    stub = StubStripe([], [shapes.subscription(id="sub_new"), ended_long_ago, ended_in_the_window])
    sink = IdempotentSink(subscriptions=[_ours("sub_gone")])

    report = _run(stub, sink)

    assert report.drift == (
        SubscriptionDrift("sub_gone", "only in Creditline", "", "active"),
        SubscriptionDrift("sub_new", "only in Stripe", "active", ""),
        SubscriptionDrift("sub_recent", "only in Stripe", "canceled", ""),
    )
    summary = report.summary()
    assert "sub_new only in Stripe: stripe=active creditline=-" in summary
    assert "sub_old" not in summary


def test_stripe_objects_are_read_like_webhook_json() -> None:
    listed = stripe.Event.construct_from(_refund("evt_obj", NOV_1 + 10), "sk_test_stub")
    subscription = stripe.Subscription.construct_from(shapes.subscription(), "sk_test_stub")
    sink = IdempotentSink(subscriptions=[_ours()])

    report = _run(StubStripe([listed], [subscription]), sink)

    assert sink.calls == [("evt_obj", "stripe:evt_obj")]
    assert report.drift == ()


def test_progress_names_each_event_and_its_outcome() -> None:
    lines: list[str] = []

    reconcile(
        StubStripe([_refund("evt_1", NOV_1 + 10)]).client(),
        IdempotentSink(),
        SINCE,
        progress=lines.append,
    )

    assert "evt_1 charge.refunded: applied" in lines


def test_since_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        reconcile(
            StubStripe([]).client(),
            IdempotentSink(),
            datetime(2026, 11, 1),  # noqa: DTZ001 - the naive datetime under test
            progress=print,
        )


def test_build_stripe_client_needs_the_secret_key() -> None:
    with pytest.raises(SettingError, match="STRIPE_SECRET_KEY"):
        build_stripe_client(GatewaySettings(STRIPE_SECRET_KEY=SecretStr("")))

    client = build_stripe_client(GatewaySettings(STRIPE_SECRET_KEY=SecretStr("sk_test_123")))

    assert isinstance(client, stripe.StripeClient)


def test_main_without_a_secret_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)

    assert reconcile_module.main(["--since", "2026-11-01T00:00:00Z"]) == 2
    assert "STRIPE_SECRET_KEY" in capsys.readouterr().err


def test_main_refuses_a_time_without_a_zone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        reconcile_module.main(["--since", "2026-11-01T00:00:00"])

    assert raised.value.code == 2
    assert "time zone" in capsys.readouterr().err
