"""A stand-in for the StripePort that records what the server asks Stripe for and answers
like Stripe would, for tests about the asking rather than the wire (the adapter itself is
tested against the fake Stripe server)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from billing_service.domain.errors import FailedPrecondition, StripeUnavailable
from billing_service.service_layer.ports import CheckoutSession


@dataclass
class RecordingStripe:
    """A StripePort that records calls and answers like Stripe would."""

    calls: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    customers: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, tuple[str, tuple[object, ...]]] = field(default_factory=dict)
    down: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def create_customer(
        self, *, account_id: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> str:
        self._record("customer", account_id=account_id, key=idempotency_key)
        return self.customers.setdefault(idempotency_key, f"cus_{len(self.customers) + 1}")

    def create_checkout_session(
        self,
        *,
        customer_id: str,
        price_id: str,
        mode: Literal["payment", "subscription"],
        metadata: Mapping[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> CheckoutSession:
        self._record(
            "checkout",
            customer=customer_id,
            price=price_id,
            mode=mode,
            metadata=dict(metadata),
            key=idempotency_key,
        )
        # Like Stripe: a retry under the same key answers with the session the first made, and
        # the same key with other parameters is refused.
        asked = (customer_id, price_id, mode, dict(metadata), success_url, cancel_url)
        with self._lock:
            first = self.sessions.setdefault(
                idempotency_key, (f"cs_{len(self.sessions) + 1}", asked)
            )
        if first[1] != asked:
            raise FailedPrecondition(
                "Stripe refused the request: Keys for idempotent requests can only be used "
                "with the same parameters they were first used with",
                reason="STRIPE_REQUEST_REJECTED",
                stripe_status="400",
            )
        return CheckoutSession(first[0], f"https://checkout.example/{mode}")

    def create_portal_session(self, *, customer_id: str, return_url: str) -> str:
        self._record("portal", customer=customer_id, return_url=return_url)
        return f"https://portal.example/{customer_id}"

    def _record(self, what: str, **details: object) -> None:
        if self.down:
            raise StripeUnavailable("Stripe could not be reached")
        self.calls.append((what, details))
