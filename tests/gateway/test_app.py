"""The webhook endpoint through aiohttp's test client, with a recording fake in place of the client.

Each test checks the answer Stripe gets and whether (and how) the service would have been called.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from creditline import (
    DeadlineExceeded,
    IdempotencyKeyReused,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServerError,
    Unavailable,
)
from creditline.v1 import billing_service_pb2, stripe_event_pb2
from pydantic import SecretStr
from pytest_aiohttp import AiohttpClient

from tests.gateway import shapes
from tests.gateway.shapes import OTHER_SECRET, SECRET, sign
from webhook_gateway.app import MAX_BODY_BYTES, create_app
from webhook_gateway.settings import GatewaySettings

pytestmark = pytest.mark.asyncio

Client = TestClient[web.Request, web.Application]


@dataclass
class Call:
    """One apply_stripe_event call the gateway made."""

    event: stripe_event_pb2.StripeEvent
    idempotency_key: str | None
    timeout: float | None


@dataclass
class RecordingSink:
    """Records calls; answers with `outcome`, or raises `error` when set."""

    outcome: stripe_event_pb2.StripeEventOutcome.ValueType = (
        stripe_event_pb2.STRIPE_EVENT_OUTCOME_APPLIED
    )
    error: Exception | None = None
    calls: list[Call] = field(default_factory=list)

    def apply_stripe_event(
        self,
        event: stripe_event_pb2.StripeEvent,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> billing_service_pb2.ApplyStripeEventResponse:
        self.calls.append(Call(event, idempotency_key, timeout))
        if self.error is not None:
            raise self.error
        return billing_service_pb2.ApplyStripeEventResponse(
            outcome=self.outcome, detail="granted 500 credits", grant_ids=["grt_1"]
        )


@pytest.fixture
def settings() -> GatewaySettings:
    return GatewaySettings(
        STRIPE_WEBHOOK_SECRET=SecretStr(f"{SECRET}, {OTHER_SECRET}"),
        CREDITLINE_GATEWAY_RPC_TIMEOUT_SECONDS=3,
        CREDITLINE_GATEWAY_TOLERANCE_SECONDS=300,
    )


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest_asyncio.fixture
async def client(
    aiohttp_client: AiohttpClient, settings: GatewaySettings, sink: RecordingSink
) -> Client:
    return await aiohttp_client(create_app(settings, sink))


def _refund_event(event_id: str = "evt_1SWdGt2eZvKYlo2C0k9mQxRt") -> dict[str, Any]:
    return shapes.event("charge.refunded", shapes.charge(), event_id=event_id)


async def _post(
    client: Client,
    body: bytes,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    if headers is None:
        headers = {"Stripe-Signature": sign(body, secret, timestamp)}
    headers = {"Content-Type": "application/json; charset=utf-8", **headers}
    response = await client.post("/stripe/webhook", data=body, headers=headers)
    return response.status, await response.json()


async def test_a_signed_event_is_applied_once_with_the_event_key(
    client: Client, sink: RecordingSink
) -> None:
    status, body = await _post(client, shapes.encode(_refund_event("evt_abc")))

    assert (status, body) == (200, {"status": "applied"})
    assert len(sink.calls) == 1
    call = sink.calls[0]
    assert call.idempotency_key == "stripe:evt_abc"
    assert call.timeout == 3
    assert call.event.event_id == "evt_abc"
    assert call.event.charge.charge_id == "ch_3SWdGt2eZvKYlo2C1Refund1"


async def test_a_redelivery_is_the_same_call(client: Client, sink: RecordingSink) -> None:
    body = shapes.encode(_refund_event("evt_again"))

    await _post(client, body)
    await _post(client, body)

    assert [call.idempotency_key for call in sink.calls] == ["stripe:evt_again"] * 2
    assert sink.calls[0].event == sink.calls[1].event


async def test_an_event_signed_with_the_second_secret_is_accepted(
    client: Client, sink: RecordingSink
) -> None:
    status, _ = await _post(client, shapes.encode(_refund_event()), secret=OTHER_SECRET)

    assert status == 200
    assert len(sink.calls) == 1


@pytest.mark.parametrize(
    ("outcome", "name"),
    [
        (stripe_event_pb2.STRIPE_EVENT_OUTCOME_IGNORED, "ignored"),
        (stripe_event_pb2.STRIPE_EVENT_OUTCOME_STALE, "stale"),
    ],
)
async def test_the_outcome_is_the_answer(
    client: Client,
    sink: RecordingSink,
    outcome: stripe_event_pb2.StripeEventOutcome.ValueType,
    name: str,
) -> None:
    sink.outcome = outcome

    assert await _post(client, shapes.encode(_refund_event())) == (200, {"status": name})


def _signed_then_tampered() -> tuple[bytes, dict[str, str]]:
    body = shapes.encode(_refund_event())
    header = sign(body, SECRET)
    return body.replace(b'"amount_refunded": 2000', b'"amount_refunded": 5000'), {
        "Stripe-Signature": header
    }


def _signed(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, timestamp)}


_BODY = shapes.encode(_refund_event())


@pytest.mark.parametrize(
    ("body", "headers", "error"),
    [
        pytest.param(*_signed_then_tampered(), "invalid signature", id="tampered body"),
        pytest.param(_BODY, _signed(_BODY, "whsec_someone_else"), "invalid signature", id="wrong"),
        pytest.param(_BODY, {"Stripe-Signature": "t=1,v1=abc"}, "invalid signature", id="bad"),
        pytest.param(_BODY, {}, "missing signature", id="missing header"),
        pytest.param(b"{broken", _signed(b"{broken"), "malformed body", id="broken json"),
        pytest.param(b'"text"', _signed(b'"text"'), "malformed body", id="json not an object"),
    ],
)
async def test_unverified_requests_are_400_and_never_applied(
    client: Client, sink: RecordingSink, body: bytes, headers: dict[str, str], error: str
) -> None:
    assert await _post(client, body, headers=headers) == (400, {"error": error})
    assert sink.calls == []


async def test_a_signature_older_than_300_seconds_is_400(
    client: Client, sink: RecordingSink
) -> None:
    body = shapes.encode(_refund_event())

    status, answer = await _post(client, body, timestamp=int(time.time()) - 301)

    assert (status, answer) == (400, {"error": "stale timestamp"})
    assert sink.calls == []


async def test_a_handled_event_lacking_a_field_is_400(client: Client, sink: RecordingSink) -> None:
    event = shapes.event("charge.refunded", shapes.charge(amount=None))

    status, answer = await _post(client, shapes.encode(event))

    assert status == 400
    assert answer == {"error": "bad payload", "detail": "data.object.amount is missing"}
    assert sink.calls == []


@pytest.mark.parametrize(
    "event",
    [
        shapes.event("customer.created", {"id": "cus_1", "object": "customer"}),
        shapes.event("invoice.paid", shapes.invoice(parent=None, billing_reason="manual")),
    ],
    ids=["unhandled type", "invoice without subscription"],
)
async def test_events_needing_no_call_are_200_ignored(
    client: Client, sink: RecordingSink, event: dict[str, Any]
) -> None:
    assert await _post(client, shapes.encode(event)) == (200, {"status": "ignored"})
    assert sink.calls == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Unavailable("database unavailable"), 503),
        (DeadlineExceeded("deadline exceeded"), 503),
        (ConnectionRefusedError("connection refused"), 503),
        (InvalidArgument("event.type is missing", field="event.type"), 400),
        (IdempotencyKeyReused("key used for a different request"), 400),
        (NotFound("account acct_42 not found", reason="ACCOUNT_NOT_FOUND"), 500),
        (PermissionDenied("token lacks the gateway role"), 500),
        (ServerError("boom"), 500),
        (RuntimeError("a bug"), 500),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
async def test_service_errors_choose_whether_stripe_retries(
    client: Client, sink: RecordingSink, error: Exception, status: int
) -> None:
    sink.error = error

    answer_status, answer = await _post(client, shapes.encode(_refund_event()))

    assert answer_status == status
    assert set(answer) == {"error"}
    assert str(error) not in json.dumps(answer)
    assert len(sink.calls) == 1


async def test_a_body_over_one_mebibyte_is_413(client: Client, sink: RecordingSink) -> None:
    event = _refund_event()
    event["data"]["object"]["metadata"] = {"padding": "x" * MAX_BODY_BYTES}
    body = shapes.encode(event)

    response = await client.post("/stripe/webhook", data=io.BytesIO(body), headers=_signed(body))

    assert response.status == 413
    assert await response.json() == {"error": "body too large"}
    assert sink.calls == []


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")

    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_only_post_is_served_on_the_webhook(client: Client) -> None:
    response = await client.get("/stripe/webhook")

    assert response.status == 405


_RECORD_BOOKKEEPING = {"created", "msecs", "relativeCreated", "thread", "process", "lineno"}


async def test_logs_never_hold_the_secret_the_signature_or_the_body(
    client: Client, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    checkout = shapes.encode(shapes.event("checkout.session.completed", shapes.checkout_session()))
    failed = shapes.encode(
        shapes.event("payment_intent.payment_failed", shapes.payment_intent(), event_id="evt_pf")
    )
    bad = shapes.encode(shapes.event("charge.refunded", shapes.charge(amount=None)))
    header = sign(checkout, SECRET)
    answers = [
        await client.post("/stripe/webhook", data=checkout, headers={"Stripe-Signature": header}),
        await client.post("/stripe/webhook", data=failed, headers=_signed(failed, OTHER_SECRET)),
        await client.post("/stripe/webhook", data=checkout, headers=_signed(checkout, "whsec_x")),
        await client.post("/stripe/webhook", data=b"{oops", headers=_signed(b"{oops")),
        await client.post("/stripe/webhook", data=bad, headers=_signed(bad)),
    ]
    sink.error = ServerError(f"database said {SECRET}")
    answers.append(
        await client.post("/stripe/webhook", data=checkout, headers=_signed(checkout)),
    )

    assert [answer.status for answer in answers] == [200, 200, 400, 400, 400, 500]
    assert "evt_pf" in caplog.text  # the log does name the events
    # Every field of every record, less the logging module's own clock and process numbers,
    # whose digits could spell a fragment by chance.
    logged = caplog.text + "".join(
        repr({k: v for k, v in vars(record).items() if k not in _RECORD_BOOKKEEPING})
        for record in caplog.records
    )
    texts = [await answer.text() for answer in answers]
    for secret_or_data in (
        SECRET,
        OTHER_SECRET,
        header.split("v1=")[1],
        checkout.decode(),
        failed.decode(),
        "ada@example.com",
        "9995",
        "Xt5EWLLDS7FJjR1c",
        "{oops",
    ):
        assert secret_or_data not in logged
        assert all(secret_or_data not in text for text in texts)


async def test_without_a_client_it_opens_one_to_the_target(
    aiohttp_client: AiohttpClient,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings = GatewaySettings(
        STRIPE_WEBHOOK_SECRET=SecretStr(SECRET),
        CREDITLINE_GATEWAY_TARGET=f"127.0.0.1:{closed_port}",
        CREDITLINE_GATEWAY_RPC_TIMEOUT_SECONDS=2,
    )
    client = await aiohttp_client(create_app(settings))

    status, answer = await _post(client, shapes.encode(_refund_event()))

    assert (status, answer) == (503, {"error": "service unavailable"})
