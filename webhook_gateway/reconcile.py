"""`creditline stripe reconcile`: catch up on Stripe events the webhook missed, and report drift.

Stripe keeps 30 days of events. reconcile lists those created since a time, translates them as the
webhook does, and applies them oldest first through ApplyStripeEvent with the webhook's own key,
"stripe:" + the event id; an event the webhook already applied is then a replay on the server and
changes nothing (a replay reports the outcome of the first application, so replays are counted
with it). Then it compares Stripe's subscriptions with Creditline's mirror, status and current
period end, and lists those only one side has. Drift is reported, never corrected: applying the
events is what corrects state.

The Stripe client is a stripe.StripeClient pointed at STRIPE_API_BASE (a local fake in tests);
nothing here sets stripe's module-level globals.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import stripe
from creditline import CreditlineClient, CreditlineError, DeadlineExceeded, Unavailable
from creditline.v1 import subscription_pb2
from pydantic import ValidationError

from webhook_gateway.app import EventSink, outcome_name
from webhook_gateway.settings import GatewaySettings, SettingError
from webhook_gateway.translate import HANDLED_TYPES, SUBSCRIPTION_STATUSES, BadPayload, translate

PAGE_SIZE: Final = 100
"""Objects per Stripe list page, the most Stripe allows."""

EVENT_RETENTION: Final = timedelta(days=30)
"""How far back Stripe's event list reaches."""

STRIPE_NETWORK_RETRIES: Final = 2

_STATUS_NAMES: Final = {value: name for name, value in SUBSCRIPTION_STATUSES.items()}


class ReconcileSink(EventSink, Protocol):
    """What reconcile calls: CreditlineClient, or a fake in tests."""

    def iter_subscriptions(self) -> Iterator[subscription_pb2.Subscription]:
        """Yield every subscription Creditline mirrors."""
        ...


@dataclass(frozen=True)
class FailedEvent:
    """An event that could not be applied, and why (the error's code, reason and message)."""

    event_id: str
    type: str
    error: str


@dataclass(frozen=True)
class SubscriptionDrift:
    """One difference between a Stripe subscription and Creditline's mirror of it.

    `field` is "status", "current_period_end", "only in Stripe" or "only in Creditline"; the
    two values are as each side has it ("" for the side that lacks the subscription).
    """

    subscription_id: str
    field: str
    stripe: str
    creditline: str


@dataclass(frozen=True)
class ReconcileReport:
    """What a reconcile run did and found."""

    events_listed: int
    """Events Stripe listed since the start time."""
    not_handled: int
    """Listed events that need no call, such as invoices that bill no subscription."""
    outcomes: Mapping[str, int]
    """Applied events by the outcome the server reported: "applied", "ignored", "stale"."""
    failed: tuple[FailedEvent, ...]
    """Events that could not be translated or were refused; the rest were still applied."""
    stopped_early: bool
    """The service became unreachable, so the events after the failed one were not tried."""
    drift: tuple[SubscriptionDrift, ...] = ()
    """Subscription differences found after applying (empty when stopped early)."""

    @property
    def succeeded(self) -> bool:
        """Whether every listed event that needs a call was applied."""
        return not self.failed and not self.stopped_early

    def summary(self) -> str:
        """The report as lines of text for the console."""
        counts = ", ".join(f"{count} {name}" for name, count in sorted(self.outcomes.items()))
        lines = [
            f"events listed: {self.events_listed}, not handled: {self.not_handled}, "
            f"applied with outcome: {counts or 'none'}, failed: {len(self.failed)}"
        ]
        lines += [f"  failed {f.event_id} ({f.type}): {f.error}" for f in self.failed]
        if self.stopped_early:
            lines.append("stopped early: the Creditline service could not be reached")
        lines.append(f"subscription drift: {len(self.drift) or 'none'}")
        lines += [
            f"  {d.subscription_id} {d.field}: stripe={d.stripe or '-'} "
            f"creditline={d.creditline or '-'}"
            for d in self.drift
        ]
        return "\n".join(lines)


def build_stripe_client(settings: GatewaySettings) -> stripe.StripeClient:
    """A StripeClient for STRIPE_SECRET_KEY at STRIPE_API_BASE, at the package's API version.

    Raises SettingError naming STRIPE_SECRET_KEY when it is empty.
    """
    return stripe.StripeClient(
        settings.stripe_api_key(),
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=STRIPE_NETWORK_RETRIES,
    )


def reconcile(
    stripe_client: stripe.StripeClient,
    sink: ReconcileSink,
    since: datetime,
    *,
    progress: Callable[[str], None],
) -> ReconcileReport:
    """Apply the Stripe events created since `since` (aware), oldest first, and report drift.

    Stripe errors (stripe.StripeError) and errors listing Creditline's subscriptions propagate;
    an event that cannot be applied is recorded in the report and the next one is tried, unless
    the service is unreachable, which ends the run early.
    """
    if since.utcoffset() is None:
        raise ValueError("since must be timezone-aware, such as 2026-11-01T00:00:00Z")
    listing = stripe_client.v1.events.list(
        params={
            "created": {"gte": int(since.timestamp())},
            "types": sorted(HANDLED_TYPES),
            "limit": PAGE_SIZE,
        }
    )
    # Stripe lists newest first; applying oldest first is what one ordered delivery would do.
    events = sorted(
        (_as_mapping(item) for item in listing.auto_paging_iter()),
        key=lambda event: (_int(event.get("created")), str(event.get("id"))),
    )
    progress(f"{len(events)} events since {since.isoformat()}")
    outcomes: Counter[str] = Counter()
    failed: list[FailedEvent] = []
    not_handled = 0
    for event in events:
        event_id, event_type = str(event.get("id", "?")), str(event.get("type", "?"))
        try:
            translated = translate(event)
        except BadPayload as error:
            failed.append(FailedEvent(event_id, event_type, f"bad payload: {error}"))
            progress(f"{event_id} {event_type}: bad payload: {error}")
            continue
        if translated is None:
            not_handled += 1
            continue
        try:
            response = sink.apply_stripe_event(
                translated, idempotency_key=f"stripe:{translated.event_id}"
            )
        except (Unavailable, DeadlineExceeded) as error:
            failed.append(FailedEvent(event_id, event_type, str(error)))
            progress(f"{event_id} {event_type}: {error}; stopping")
            return ReconcileReport(
                events_listed=len(events),
                not_handled=not_handled,
                outcomes=outcomes,
                failed=tuple(failed),
                stopped_early=True,
            )
        except CreditlineError as error:
            failed.append(FailedEvent(event_id, event_type, str(error)))
            progress(f"{event_id} {event_type}: {error}")
            continue
        outcome = outcome_name(response.outcome)
        outcomes[outcome] += 1
        progress(f"{event_id} {event_type}: {outcome}")
    progress("comparing subscriptions")
    drift = subscription_drift(
        _stripe_subscriptions(stripe_client), sink.iter_subscriptions(), since
    )
    return ReconcileReport(
        events_listed=len(events),
        not_handled=not_handled,
        outcomes=outcomes,
        failed=tuple(failed),
        stopped_early=False,
        drift=tuple(drift),
    )


def subscription_drift(
    stripe_subscriptions: Iterable[Mapping[str, Any]],
    ours: Iterable[subscription_pb2.Subscription],
    since: datetime,
) -> list[SubscriptionDrift]:
    """The differences between Stripe's subscriptions and Creditline's, by subscription id.

    Status and current period end (of the first item, where Stripe keeps it) are compared. A
    subscription only Stripe has is reported unless it ended before `since`: such old history is
    outside the run and would bury the drift that matters.
    """
    theirs = {str(sub.get("id")): sub for sub in stripe_subscriptions}
    mirror = {sub.subscription_id: sub for sub in ours}
    drift: list[SubscriptionDrift] = []
    for subscription_id in sorted(theirs.keys() | mirror.keys()):
        stripe_sub, our_sub = theirs.get(subscription_id), mirror.get(subscription_id)
        if stripe_sub is not None and our_sub is not None:
            drift += _compare(subscription_id, stripe_sub, our_sub)
        elif stripe_sub is not None:
            ended_at = stripe_sub.get("ended_at")
            if isinstance(ended_at, int) and ended_at < since.timestamp():
                continue
            status = str(stripe_sub.get("status", ""))
            drift.append(SubscriptionDrift(subscription_id, "only in Stripe", status, ""))
        elif our_sub is not None:
            status = _our_status(our_sub)
            drift.append(SubscriptionDrift(subscription_id, "only in Creditline", "", status))
    return drift


def _compare(
    subscription_id: str, stripe_sub: Mapping[str, Any], our_sub: subscription_pb2.Subscription
) -> list[SubscriptionDrift]:
    drift: list[SubscriptionDrift] = []
    their_status, our_status = str(stripe_sub.get("status", "")), _our_status(our_sub)
    if their_status != our_status:
        drift.append(SubscriptionDrift(subscription_id, "status", their_status, our_status))
    their_end = _first_item_period_end(stripe_sub)
    our_end = (
        our_sub.current_period_end_time.seconds
        if our_sub.HasField("current_period_end_time")
        else None
    )
    if their_end != our_end:
        drift.append(
            SubscriptionDrift(subscription_id, "current_period_end", _iso(their_end), _iso(our_end))
        )
    return drift


def _stripe_subscriptions(stripe_client: stripe.StripeClient) -> Iterator[Mapping[str, Any]]:
    listing = stripe_client.v1.subscriptions.list(params={"status": "all", "limit": PAGE_SIZE})
    return (_as_mapping(item) for item in listing.auto_paging_iter())


def _first_item_period_end(subscription: Mapping[str, Any]) -> int | None:
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], Mapping):
        return None
    end = data[0].get("current_period_end")
    return end if isinstance(end, int) else None


def _our_status(subscription: subscription_pb2.Subscription) -> str:
    """Our status in Stripe's words, or the enum's name when Stripe has no word for it."""
    return _STATUS_NAMES.get(
        subscription.status, subscription_pb2.SubscriptionStatus.Name(subscription.status)
    )


def _iso(seconds: int | None) -> str:
    return "" if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _as_mapping(item: object) -> Mapping[str, Any]:
    """A listed Stripe object as plain JSON-shaped data, as the webhook would receive it."""
    if isinstance(item, stripe.StripeObject):
        return item.to_dict()
    if isinstance(item, Mapping):
        return item
    raise TypeError(f"expected a Stripe object, got {type(item).__name__}")


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`creditline stripe reconcile --since TIME [--target HOST:PORT]`.

    Prints progress and the report. Exits 0 when every event was applied (drift or not), 1 when
    an event failed or Stripe or the service could not be reached, 2 on bad configuration.
    """
    parser = argparse.ArgumentParser(
        prog="creditline stripe reconcile",
        description="Apply Stripe events Creditline may have missed and report subscription drift.",
    )
    parser.add_argument(
        "--since",
        required=True,
        type=_aware_time,
        help="ISO time with a zone, e.g. 2026-11-01T00:00:00Z (Stripe keeps 30 days of events)",
    )
    parser.add_argument(
        "--target", help="host:port of the Creditline server (CREDITLINE_GATEWAY_TARGET)"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"CREDITLINE_GATEWAY_TARGET": args.target} if args.target else {}
    try:
        settings = GatewaySettings(**overrides)
        stripe_client = build_stripe_client(settings)
    except ValidationError as error:
        print(f"creditline stripe reconcile: bad configuration:\n{error}", file=sys.stderr)
        return 2
    except SettingError as error:
        print(f"creditline stripe reconcile: {error}", file=sys.stderr)
        return 2
    if args.since < datetime.now(UTC) - EVENT_RETENTION:
        print("note: Stripe lists only the last 30 days of events", file=sys.stderr)
    with CreditlineClient(
        settings.target, token=settings.bearer_token, timeout=settings.rpc_timeout_seconds
    ) as client:
        try:
            report = reconcile(stripe_client, client, args.since, progress=print)
        except stripe.StripeError as error:
            print(f"creditline stripe reconcile: Stripe request failed: {error}", file=sys.stderr)
            return 1
        except CreditlineError as error:
            print(f"creditline stripe reconcile: {error}", file=sys.stderr)
            return 1
    print(report.summary())
    return 0 if report.succeeded else 1


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2026-11-01T00:00:00Z")
    return moment
