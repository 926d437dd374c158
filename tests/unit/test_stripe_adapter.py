"""StripeBilling, the StripePort over the official client, against the fake Stripe server:
customers, Checkout sessions for a package (payment) and a plan (subscription) with the
metadata where later events carry it, portal sessions, idempotent replays, and every kind of
Stripe failure mapped to the domain error a caller can act on, never echoing the secret key."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe

from billing_service.domain.errors import FailedPrecondition, StripeUnavailable
from billing_service.settings import Settings
from billing_service.stripe.client import StripeBilling, build_stripe_client
from tests.fakes.fixtures import fake_stripe, stripe_client
from tests.fakes.stripe_server import FakeStripe

__all__ = ["fake_stripe", "stripe_client"]  # fixtures used by the tests below

SUCCESS = "https://app.example/billing/success"
CANCEL = "https://app.example/billing/cancel"
SECRET = "sk_test_51SecretKeyThatMustNeverLeak"


@pytest.fixture
def billing(stripe_client: stripe.StripeClient) -> StripeBilling:
    return StripeBilling(stripe_client)


def _price(client: stripe.StripeClient, *, recurring: bool) -> str:
    product = client.v1.products.create(params={"name": "Credits"})
    params: Any = {"product": product.id, "unit_amount": 2000, "currency": "usd"}
    if recurring:
        params["recurring"] = {"interval": "month"}
    return client.v1.prices.create(params=params).id


def _posts(fake: FakeStripe, path: str) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path == path]


# --- the client from settings -----------------------------------------------------------------


def test_no_secret_key_means_no_client() -> None:
    assert build_stripe_client(Settings(stripe_secret_key="")) is None


def test_client_from_settings_talks_to_the_configured_address(fake_stripe: FakeStripe) -> None:
    settings = Settings(
        stripe_secret_key=fake_stripe.api_key,
        stripe_api_base=fake_stripe.base_url,
        stripe_max_network_retries=0,
    )
    client = build_stripe_client(settings)
    assert client is not None

    customer_id = StripeBilling(client).create_customer(
        account_id="acct-1", metadata={}, idempotency_key="cus-key-1"
    )

    assert fake_stripe.object(customer_id)["metadata"] == {"account_id": "acct-1"}
    (request,) = fake_stripe.requests
    assert request.headers["authorization"] == f"Bearer {fake_stripe.api_key}"
    assert request.stripe_version == stripe.api_version
    assert stripe.api_key is None  # never the global key


# --- customers, Checkout, portal ----------------------------------------------------------------


def test_customer_carries_the_account_id_and_the_idempotency_key(
    billing: StripeBilling, fake_stripe: FakeStripe
) -> None:
    customer_id = billing.create_customer(
        account_id="acct-7", metadata={"team": "research"}, idempotency_key="acct-7:customer"
    )

    assert customer_id.startswith("cus_")
    customer = fake_stripe.object(customer_id)
    assert customer["metadata"] == {"team": "research", "account_id": "acct-7"}
    assert _posts(fake_stripe, "/v1/customers")[0].idempotency_key == "acct-7:customer"

    again = billing.create_customer(
        account_id="acct-7", metadata={"team": "research"}, idempotency_key="acct-7:customer"
    )
    assert again == customer_id
    assert len(fake_stripe.objects("customer")) == 1


def test_checkout_for_a_package_is_a_payment_with_metadata_on_the_payment_intent(
    billing: StripeBilling, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price_id = _price(stripe_client, recurring=False)
    customer_id = billing.create_customer(account_id="acct-1", metadata={}, idempotency_key="c1")
    metadata = {"account_id": "acct-1", "package_id": "pack_100"}

    session = billing.create_checkout_session(
        customer_id=customer_id,
        price_id=price_id,
        mode="payment",
        metadata=metadata,
        success_url=SUCCESS,
        cancel_url=CANCEL,
        idempotency_key="checkout-1",
    )

    assert session.id.startswith("cs_")
    assert session.url.startswith("https://checkout.stripe.com/")
    stored = fake_stripe.object(session.id)
    assert stored["mode"] == "payment"
    assert stored["customer"] == customer_id
    assert stored["client_reference_id"] == "acct-1"
    assert stored["metadata"] == metadata
    assert (stored["success_url"], stored["cancel_url"]) == (SUCCESS, CANCEL)
    (request,) = _posts(fake_stripe, "/v1/checkout/sessions")
    assert request.params["line_items"] == [{"price": price_id, "quantity": "1"}]
    assert request.params["payment_intent_data"] == {"metadata": metadata}
    assert "subscription_data" not in request.params
    assert request.idempotency_key == "checkout-1"


def test_checkout_for_a_plan_is_a_subscription_with_metadata_on_the_subscription(
    billing: StripeBilling, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price_id = _price(stripe_client, recurring=True)
    customer_id = billing.create_customer(account_id="acct-2", metadata={}, idempotency_key="c2")
    metadata = {"account_id": "acct-2", "plan_id": "pro_monthly"}

    session = billing.create_checkout_session(
        customer_id=customer_id,
        price_id=price_id,
        mode="subscription",
        metadata=metadata,
        success_url=SUCCESS,
        cancel_url=CANCEL,
        idempotency_key="checkout-2",
    )

    stored = fake_stripe.object(session.id)
    assert stored["mode"] == "subscription"
    assert stored["metadata"] == metadata
    (request,) = _posts(fake_stripe, "/v1/checkout/sessions")
    assert request.params["subscription_data"] == {"metadata": metadata}
    assert "payment_intent_data" not in request.params


def test_the_same_idempotency_key_returns_the_same_session(
    billing: StripeBilling, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    price_id = _price(stripe_client, recurring=False)
    customer_id = billing.create_customer(account_id="acct-3", metadata={}, idempotency_key="c3")

    def checkout(key: str) -> str:
        return billing.create_checkout_session(
            customer_id=customer_id,
            price_id=price_id,
            mode="payment",
            metadata={"account_id": "acct-3"},
            success_url=SUCCESS,
            cancel_url=CANCEL,
            idempotency_key=key,
        ).id

    first = checkout("buy-1")
    assert checkout("buy-1") == first
    assert len(fake_stripe.objects("checkout.session")) == 1
    assert checkout("buy-2") != first


def test_portal_session_returns_its_url(billing: StripeBilling, fake_stripe: FakeStripe) -> None:
    customer_id = billing.create_customer(account_id="acct-4", metadata={}, idempotency_key="c4")

    url = billing.create_portal_session(customer_id=customer_id, return_url=SUCCESS)

    assert url.startswith("https://billing.stripe.com/")
    (request,) = _posts(fake_stripe, "/v1/billing_portal/sessions")
    assert request.params == {"customer": customer_id, "return_url": SUCCESS}


# --- errors -------------------------------------------------------------------------------------


def test_a_refused_request_is_a_failed_precondition_with_stripes_reason(
    billing: StripeBilling,
) -> None:
    customer_id = billing.create_customer(account_id="acct-5", metadata={}, idempotency_key="c5")

    with pytest.raises(FailedPrecondition) as caught:
        billing.create_checkout_session(
            customer_id=customer_id,
            price_id="price_doesnotexist",
            mode="payment",
            metadata={"account_id": "acct-5"},
            success_url=SUCCESS,
            cancel_url=CANCEL,
            idempotency_key="checkout-5",
        )

    assert caught.value.reason == "STRIPE_REQUEST_REJECTED"
    assert caught.value.message == (
        "Stripe refused the request: No such price: 'price_doesnotexist'"
    )
    assert caught.value.metadata["stripe_status"] == "400"
    assert caught.value.metadata["stripe_code"] == "resource_missing"


def test_an_unknown_customer_for_the_portal_is_refused(billing: StripeBilling) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        billing.create_portal_session(customer_id="cus_missing", return_url=SUCCESS)
    assert caught.value.reason == "STRIPE_REQUEST_REJECTED"
    assert "cus_missing" in caught.value.message


class _Answering(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the server's fixed status and Stripe-shaped error body."""

    server: _AnsweringServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.keys.append(self.headers.get("Idempotency-Key") or "")
        body = json.dumps(self.server.body).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _AnsweringServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _Answering)
        self.status = status
        self.body = body
        self.keys: list[str] = []


StartAnswering = Callable[[int, dict[str, Any]], _AnsweringServer]


@pytest.fixture
def answering() -> Iterator[StartAnswering]:
    """Starts servers that answer every POST with one status and body."""
    servers: list[_AnsweringServer] = []

    def start(status: int, body: dict[str, Any]) -> _AnsweringServer:
        server = _AnsweringServer(status, body)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _billing_at(address: str, *, key: str = SECRET, retries: int = 0) -> StripeBilling:
    client = build_stripe_client(
        Settings(
            stripe_secret_key=key,
            stripe_api_base=address,
            stripe_max_network_retries=retries,
        )
    )
    assert client is not None
    return StripeBilling(client)


def _server_address(server: _AnsweringServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_a_rejected_key_asks_to_check_the_setting_without_showing_it(
    fake_stripe: FakeStripe,
) -> None:
    bad_key = "sk_live_51RealLookingButWrongKey"
    billing = _billing_at(fake_stripe.base_url, key=bad_key)

    with pytest.raises(FailedPrecondition) as caught:
        billing.create_customer(account_id="acct-6", metadata={}, idempotency_key="c6")

    assert caught.value.reason == "STRIPE_AUTHENTICATION_FAILED"
    assert "check STRIPE_SECRET_KEY" in caught.value.message
    assert bad_key not in str(caught.value)
    assert caught.value.metadata == {"setting": "STRIPE_SECRET_KEY"}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, {"type": "api_error", "message": f"internal error for {SECRET}"}),
        (503, {"type": "api_error", "message": "service unavailable"}),
        (429, {"type": "invalid_request_error", "code": "rate_limit", "message": "slow down"}),
    ],
)
def test_stripe_failing_is_unavailable(
    answering: StartAnswering, status: int, error: dict[str, Any]
) -> None:
    server = answering(status, {"error": error})
    billing = _billing_at(_server_address(server))

    with pytest.raises(StripeUnavailable) as caught:
        billing.create_customer(account_id="acct-8", metadata={}, idempotency_key="c8")

    assert caught.value.reason == "STRIPE_UNAVAILABLE"
    assert SECRET not in str(caught.value)


def test_a_bad_request_answer_is_rejected_and_never_echoes_a_key(answering: StartAnswering) -> None:
    message = f"Invalid parameter for key {SECRET}"
    server = answering(400, {"error": {"type": "invalid_request_error", "message": message}})
    billing = _billing_at(_server_address(server))

    with pytest.raises(FailedPrecondition) as caught:
        billing.create_customer(account_id="acct-9", metadata={}, idempotency_key="c9")

    assert caught.value.reason == "STRIPE_REQUEST_REJECTED"
    assert caught.value.message == "Stripe refused the request: Invalid parameter for key sk_test_…"
    assert SECRET not in str(caught.value)


def test_a_failing_stripe_is_retried_with_the_same_idempotency_key(
    answering: StartAnswering,
) -> None:
    server = answering(500, {"error": {"type": "api_error", "message": "try again"}})
    billing = _billing_at(_server_address(server), retries=1)

    with pytest.raises(StripeUnavailable):
        billing.create_customer(account_id="acct-10", metadata={}, idempotency_key="c10")

    assert server.keys == ["c10", "c10"]


def test_a_refused_connection_is_unavailable() -> None:
    # A port that was free a moment ago: nothing listens there, so the connection is refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    billing = _billing_at(f"http://127.0.0.1:{port}")

    with pytest.raises(StripeUnavailable) as caught:
        billing.create_portal_session(customer_id="cus_1", return_url=SUCCESS)

    assert (
        caught.value.message
        == "Stripe could not be reached while creating a customer portal session"
    )
    assert SECRET not in str(caught.value)
