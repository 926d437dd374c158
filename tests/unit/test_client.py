"""CreditlineClient against a real in-process gRPC server with a scripted, recording servicer.

The fake servicer answers every CreditService RPC: it records each request with its metadata
and remaining deadline, fails with the statuses a test queued for that RPC, then answers with
the response the test set (or an empty one). Statuses are built the way the server builds
them, a google.rpc.Status with packed ErrorInfo and BadRequest details, so the error mapping is
tested through the real wire format. Backoff is zero, so no test waits.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import grpc
import pytest
from creditline import (
    AlreadyExists,
    CreditlineClient,
    CreditlineError,
    DeadlineExceeded,
    FailedPrecondition,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidArgument,
    NotFound,
    OverrunRejected,
    PermissionDenied,
    ReservationExpired,
    ReservationNotActive,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from creditline._retry import RetryPolicy
from creditline.errors import from_grpc_error
from creditline.v1 import (
    account_pb2,
    credit_service_pb2,
    credit_service_pb2_grpc,
    grant_pb2,
    ledger_pb2,
    reservation_pb2,
)
from google.protobuf import any_pb2, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

_SERVICE = credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"]

# Fakes and helpers.


@dataclass(frozen=True)
class Received:
    """One request as the fake server saw it."""

    method: str
    request: Any
    metadata: dict[str, str | bytes]
    time_remaining: float | None


@dataclass(frozen=True)
class PlainStatus(grpc.Status):
    """A status with no google.rpc.Status details, like one from a proxy or a plain abort."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, bytes], ...] = ()


class FakeCreditService(credit_service_pb2_grpc.CreditServiceServicer):
    """Records every request; fails with queued statuses, then answers as scripted."""

    empty_responses: ClassVar[dict[str, type[Message]]] = {}
    """The response type of each routed RPC, sent empty when the test set no answer."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._failures: defaultdict[str, deque[grpc.Status]] = defaultdict(deque)
        self._answers: dict[str, Callable[[Any], Message]] = {}
        self._lock = threading.Lock()

    def fail(self, method: str, *statuses: grpc.Status) -> None:
        """Make the next calls of method fail with these statuses, in order."""
        self._failures[method].extend(statuses)

    def answer(self, method: str, response: Message | Callable[[Any], Message]) -> None:
        """Answer method with this response, or with what the function makes of the request."""
        self._answers[method] = response if callable(response) else lambda _request: response

    def requests(self, method: str) -> list[Any]:
        """The requests received for method, in order."""
        return [seen.request for seen in self.received if seen.method == method]

    def handle(self, method: str, request: Message, context: grpc.ServicerContext) -> Message:
        """Record the call, then fail or answer it as scripted."""
        with self._lock:
            self.received.append(
                Received(
                    method, request, dict(context.invocation_metadata()), context.time_remaining()
                )
            )
            failures = self._failures[method]
            failure = failures.popleft() if failures else None
        if failure is not None:
            context.abort_with_status(failure)
        answer = self._answers.get(method)
        if answer is not None:
            return answer(request)
        return self.empty_responses[method]()


def _handler(method: str) -> Callable[[FakeCreditService, Message, grpc.ServicerContext], Message]:
    def handle(self: FakeCreditService, request: Message, context: grpc.ServicerContext) -> Message:
        return self.handle(method, request, context)

    return handle


def route_every_rpc(fake_type: type[FakeCreditService], service: ServiceDescriptor) -> None:
    """Send every RPC of service through fake_type.handle, so a new RPC needs no new fake."""
    fake_type.empty_responses = {
        **fake_type.empty_responses,
        **{
            method.name: message_factory.GetMessageClass(method.output_type)
            for method in service.methods
        },
    }
    for method in service.methods:
        setattr(fake_type, method.name, _handler(method.name))


route_every_rpc(FakeCreditService, _SERVICE)


def status(
    code: grpc.StatusCode,
    message: str = "refused",
    *,
    reason: str | None = None,
    metadata: Mapping[str, str] | None = None,
    violations: Sequence[tuple[str, str]] = (),
    domain: str = "creditline.dev",
) -> grpc.Status:
    """A status as the Creditline server sends it: google.rpc.Status with packed details."""
    details = []
    if reason is not None:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata))
        details.append(info)
    if violations:
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=text)
                    for field, text in violations
                ]
            )
        )
        details.append(bad_request)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=details)
    )


def _reservation(
    reservation_id: str, state: reservation_pb2.ReservationStatus.ValueType
) -> reservation_pb2.Reservation:
    return reservation_pb2.Reservation(
        reservation_id=reservation_id, account_id="acct", status=state
    )


@pytest.fixture
def fake() -> FakeCreditService:
    return FakeCreditService()


@pytest.fixture
def target(fake: FakeCreditService) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    credit_service_pb2_grpc.add_CreditServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None).wait()


@pytest.fixture
def client(target: str) -> Iterator[CreditlineClient]:
    with CreditlineClient(target, token="s3cret", backoff=0, timeout=5) as client:
        yield client


# Requests and responses.


def test_spend_sends_its_fields_and_returns_the_response(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    fake.answer("SpendCredits", credit_service_pb2.SpendCreditsResponse(available="90"))

    response = client.spend_credits(
        "acct", "10", feature="chat", request_id="req-1", metadata={"model": "m1"}
    )

    assert response.available == "90"
    [request] = fake.requests("SpendCredits")
    assert (request.account_id, request.amount, request.feature, request.request_id) == (
        "acct",
        "10",
        "chat",
        "req-1",
    )
    assert dict(request.metadata) == {"model": "m1"}
    assert request.idempotency_key


def test_create_account_sends_the_account(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    client.create_account(
        "acct",
        billing_mode=account_pb2.BILLING_MODE_HYBRID,
        parent_account_id="org",
        low_balance_threshold=Decimal("5.00"),
        idempotency_key="create-acct",
    )

    [request] = fake.requests("CreateAccount")
    assert request.account.account_id == "acct"
    assert request.account.billing_mode == account_pb2.BILLING_MODE_HYBRID
    assert request.account.parent_account_id == "org"
    assert request.account.low_balance_threshold == "5"
    assert request.idempotency_key == "create-acct"


def test_grant_credits_converts_times_and_priority(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    effective = datetime(2030, 1, 1, tzinfo=UTC)

    client.grant_credits(
        "acct",
        100,
        source=grant_pb2.GRANT_SOURCE_PURCHASE,
        priority=0,
        effective_time=effective,
        expire_time=effective + timedelta(days=30),
    )

    [request] = fake.requests("GrantCredits")
    assert request.amount == "100"
    assert request.source == grant_pb2.GRANT_SOURCE_PURCHASE
    assert request.HasField("priority")
    assert request.priority == 0
    assert request.effective_time.ToDatetime(tzinfo=UTC) == effective
    assert request.expire_time.ToDatetime(tzinfo=UTC) == effective + timedelta(days=30)


def test_grant_credits_leaves_unset_fields_unset(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    client.grant_credits("acct", "1", source=grant_pb2.GRANT_SOURCE_PROMOTIONAL)

    [request] = fake.requests("GrantCredits")
    assert not request.HasField("priority")
    assert not request.HasField("effective_time")
    assert not request.HasField("expire_time")


def test_naive_datetimes_are_refused_before_sending(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        client.grant_credits(
            "acct",
            "1",
            source=grant_pb2.GRANT_SOURCE_PURCHASE,
            expire_time=datetime(2030, 1, 1),  # noqa: DTZ001 - the naive datetime under test
        )
    assert fake.received == []


def test_reserve_credits_sends_the_ttl(client: CreditlineClient, fake: FakeCreditService) -> None:
    client.reserve_credits("acct", "3", ttl=timedelta(minutes=5))

    [request] = fake.requests("ReserveCredits")
    assert request.ttl.ToTimedelta() == timedelta(minutes=5)


def test_refund_without_amount_sends_empty_amount(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    client.refund_spend("txn_1", reason="goodwill")
    client.refund_spend("txn_1", amount=Decimal("2.50"))

    whole, part = fake.requests("RefundSpend")
    assert (whole.ledger_entry_id, whole.amount, whole.reason) == ("txn_1", "", "goodwill")
    assert part.amount == "2.5"


def test_list_ledger_entries_sends_filters(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)

    client.list_ledger_entries(
        "acct",
        start_time=start,
        kinds=[ledger_pb2.LEDGER_ENTRY_KIND_SPEND, ledger_pb2.LEDGER_ENTRY_KIND_REFUND],
        feature="chat",
        page_size=10,
        page_token="tok",
    )

    [request] = fake.requests("ListLedgerEntries")
    assert request.start_time.ToDatetime(tzinfo=UTC) == start
    assert not request.HasField("end_time")
    assert list(request.kinds) == [
        ledger_pb2.LEDGER_ENTRY_KIND_SPEND,
        ledger_pb2.LEDGER_ENTRY_KIND_REFUND,
    ]
    assert (request.feature, request.page_size, request.page_token) == ("chat", 10, "tok")


def test_iter_ledger_entries_follows_page_tokens(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    pages = {
        "": (["txn_3", "txn_2"], "p2"),
        "p2": (["txn_1"], ""),
    }

    def page(request: credit_service_pb2.ListLedgerEntriesRequest) -> Message:
        ids, next_token = pages[request.page_token]
        return credit_service_pb2.ListLedgerEntriesResponse(
            ledger_entries=[ledger_pb2.LedgerEntry(entry_id=entry_id) for entry_id in ids],
            next_page_token=next_token,
        )

    fake.answer("ListLedgerEntries", page)

    entries = client.iter_ledger_entries(
        "acct", kinds=iter([ledger_pb2.LEDGER_ENTRY_KIND_SPEND]), page_size=2
    )

    assert [entry.entry_id for entry in entries] == ["txn_3", "txn_2", "txn_1"]
    first, second = fake.requests("ListLedgerEntries")
    assert (first.page_token, second.page_token) == ("", "p2")
    assert list(second.kinds) == [ledger_pb2.LEDGER_ENTRY_KIND_SPEND]


def test_list_grants_and_reservations_send_statuses(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    client.list_grants("acct", statuses=[grant_pb2.GRANT_STATUS_ACTIVE])
    client.list_reservations("acct", statuses=[reservation_pb2.RESERVATION_STATUS_ACTIVE])

    [grants] = fake.requests("ListGrants")
    [reservations] = fake.requests("ListReservations")
    assert list(grants.statuses) == [grant_pb2.GRANT_STATUS_ACTIVE]
    assert list(reservations.statuses) == [reservation_pb2.RESERVATION_STATUS_ACTIVE]


# update_account and its mask.


def test_update_mask_names_exactly_the_given_fields(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    client.update_account("acct", stripe_customer_id="cus_1", metadata={"tier": "pro"})

    [request] = fake.requests("UpdateAccount")
    assert list(request.update_mask.paths) == ["stripe_customer_id", "metadata"]
    assert request.account.account_id == "acct"
    assert request.account.stripe_customer_id == "cus_1"
    assert dict(request.account.metadata) == {"tier": "pro"}
    assert request.idempotency_key


def test_update_account_none_clears_the_threshold(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    client.update_account(
        "acct",
        billing_mode=account_pb2.BILLING_MODE_POSTPAID,
        parent_account_id="",
        low_balance_threshold=None,
    )

    [request] = fake.requests("UpdateAccount")
    assert list(request.update_mask.paths) == [
        "billing_mode",
        "parent_account_id",
        "low_balance_threshold",
    ]
    assert request.account.low_balance_threshold == ""


def test_update_account_without_fields_sends_nothing(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    with pytest.raises(ValueError, match="at least one field"):
        client.update_account("acct")
    assert fake.received == []


# Amounts.


@pytest.mark.parametrize(
    ("amount", "sent"),
    [
        (Decimal("12.50"), "12.5"),
        (Decimal("1E+3"), "1000"),
        (Decimal("0.000001"), "0.000001"),
        (Decimal("-0.0"), "0"),
        ("0012.5000", "12.5"),
        ("7.000", "7"),
        (42, "42"),
    ],
)
def test_amounts_are_sent_as_canonical_decimal_strings(
    client: CreditlineClient, fake: FakeCreditService, amount: Decimal | str | int, sent: str
) -> None:
    client.spend_credits("acct", amount)

    [request] = fake.requests("SpendCredits")
    assert request.amount == sent


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.spend_credits("acct", 1.5),
        lambda c: c.spend_credits("acct", True),
        lambda c: c.reserve_credits("acct", 2.0),
        lambda c: c.commit_reservation("rsv_1", 0.1),
        lambda c: c.grant_credits("acct", 10.0, source=grant_pb2.GRANT_SOURCE_PURCHASE),
        lambda c: c.refund_spend("txn_1", amount=0.5),
        lambda c: c.create_account("acct", low_balance_threshold=0.5),
        lambda c: c.update_account("acct", low_balance_threshold=0.5),
        lambda c: c.hold("acct", 1.5),
    ],
)
def test_float_amounts_are_refused_and_nothing_is_sent(
    client: CreditlineClient, fake: FakeCreditService, call: Callable[[CreditlineClient], object]
) -> None:
    with pytest.raises(TypeError, match="float"):
        call(client)
    assert fake.received == []


@pytest.mark.parametrize("amount", ["abc", "", "NaN", "Infinity"])
def test_text_that_is_no_finite_decimal_is_refused(
    client: CreditlineClient, fake: FakeCreditService, amount: str
) -> None:
    with pytest.raises(ValueError, match="amount"):
        client.spend_credits("acct", amount)
    assert fake.received == []


# Retries, idempotency keys, deadlines and auth.


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_retry_reuses_the_idempotency_key_then_succeeds(
    client: CreditlineClient, fake: FakeCreditService, code: grpc.StatusCode
) -> None:
    fake.fail("SpendCredits", status(code, reason="DATABASE_UNAVAILABLE"), status(code))
    fake.answer("SpendCredits", credit_service_pb2.SpendCreditsResponse(available="5"))

    response = client.spend_credits("acct", "5")

    assert response.available == "5"
    keys = [request.idempotency_key for request in fake.requests("SpendCredits")]
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert keys[0]


def test_each_call_gets_its_own_generated_key(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    client.spend_credits("acct", "1")
    client.spend_credits("acct", "1")
    client.spend_credits("acct", "1", idempotency_key="mine")

    keys = [request.idempotency_key for request in fake.requests("SpendCredits")]
    assert keys[0] != keys[1]
    assert keys[2] == "mine"


def test_a_given_key_is_reused_on_retry(client: CreditlineClient, fake: FakeCreditService) -> None:
    fake.fail("VoidGrant", status(grpc.StatusCode.UNAVAILABLE))

    client.void_grant("grt_1", reason="fraud", idempotency_key="void-grt_1")

    assert [request.idempotency_key for request in fake.requests("VoidGrant")] == [
        "void-grt_1",
        "void-grt_1",
    ]


def test_read_methods_are_retried(client: CreditlineClient, fake: FakeCreditService) -> None:
    fake.fail("GetBalance", status(grpc.StatusCode.UNAVAILABLE))

    client.get_balance("acct")

    assert len(fake.requests("GetBalance")) == 2


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
def test_other_errors_are_not_retried(
    client: CreditlineClient, fake: FakeCreditService, code: grpc.StatusCode
) -> None:
    fake.fail("SpendCredits", status(code))

    with pytest.raises(CreditlineError) as raised:
        client.spend_credits("acct", "1")

    assert raised.value.code == code
    assert len(fake.requests("SpendCredits")) == 1


def test_attempts_stop_at_max_attempts(target: str, fake: FakeCreditService) -> None:
    fake.fail("SpendCredits", *[status(grpc.StatusCode.UNAVAILABLE)] * 5)

    with (
        CreditlineClient(target, max_attempts=3, backoff=0) as client,
        pytest.raises(Unavailable),
    ):
        client.spend_credits("acct", "1")

    assert len(fake.requests("SpendCredits")) == 3


def test_max_attempts_one_never_retries(target: str, fake: FakeCreditService) -> None:
    fake.fail("GetAccount", status(grpc.StatusCode.UNAVAILABLE))

    with CreditlineClient(target, max_attempts=1) as client, pytest.raises(Unavailable):
        client.get_account("acct")

    assert len(fake.requests("GetAccount")) == 1


def test_an_unreachable_server_raises_unavailable() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    server.stop(grace=None).wait()

    with (
        CreditlineClient(f"127.0.0.1:{port}", max_attempts=2, backoff=0, timeout=5) as client,
        pytest.raises(Unavailable) as raised,
    ):
        client.get_balance("acct")

    assert isinstance(raised.value.__cause__, grpc.RpcError)


def test_the_bearer_token_is_sent_on_every_attempt(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    fake.fail("GetAccount", status(grpc.StatusCode.UNAVAILABLE))

    client.get_account("acct")

    assert [seen.metadata.get("authorization") for seen in fake.received] == [
        "Bearer s3cret",
        "Bearer s3cret",
    ]


def test_no_authorization_is_sent_without_a_token(target: str, fake: FakeCreditService) -> None:
    with CreditlineClient(target) as client:
        client.get_account("acct")

    assert "authorization" not in fake.received[0].metadata


def test_each_attempt_gets_the_call_timeout_or_the_default(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    fake.fail("GetAccount", status(grpc.StatusCode.UNAVAILABLE))

    client.get_account("acct", timeout=1.5)
    client.get_balance("acct")

    first, retry, default = (seen.time_remaining for seen in fake.received)
    assert first is not None
    # The grpc-timeout header is rounded up to whole units, so allow a little above the timeout.
    assert 1 < first <= 1.6
    assert retry is not None
    assert 1 < retry <= 1.6
    assert default is not None
    assert 4 < default <= 5.1


def test_a_passed_channel_is_left_open(target: str, fake: FakeCreditService) -> None:
    with grpc.insecure_channel(target) as channel:
        with CreditlineClient("ignored", channel=channel):
            pass
        with CreditlineClient("ignored", channel=channel) as client:
            client.get_account("acct")

    assert len(fake.requests("GetAccount")) == 1


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.05, max_backoff=0.3)

    delays = [policy.delay(retry) for retry in range(1, 8) for _ in range(20)]

    assert all(0 <= delay <= 0.3 for delay in delays)
    assert all(0 <= policy.delay(1) <= 0.05 for _ in range(20))


@pytest.mark.parametrize("arguments", [{"max_attempts": 0}, {"backoff": -1}, {"timeout": 0}])
def test_nonsense_settings_are_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CreditlineClient("127.0.0.1:1", **arguments)


# Error mapping.


@pytest.mark.parametrize(
    "case",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", {"field": "amount"}, InvalidArgument),
        (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED", {}, IdempotencyKeyReused),
        (grpc.StatusCode.INVALID_ARGUMENT, "PARENT_CYCLE", {}, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND", {"account_id": "acct"}, NotFound),
        (grpc.StatusCode.NOT_FOUND, "GRANT_NOT_FOUND", {"grant_id": "grt_1"}, NotFound),
        (grpc.StatusCode.NOT_FOUND, "RESERVATION_NOT_FOUND", {"reservation_id": "r"}, NotFound),
        (grpc.StatusCode.NOT_FOUND, "LEDGER_ENTRY_NOT_FOUND", {"ledger_entry_id": "t"}, NotFound),
        (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", {"model": "gpt-9"}, NotFound),
        (grpc.StatusCode.NOT_FOUND, "TIER_NOT_FOUND", {"tier": "TIER_9"}, NotFound),
        (grpc.StatusCode.NOT_FOUND, "PRICE_BOOK_NOT_FOUND", {"version": "99"}, NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, "ACCOUNT_EXISTS", {"account_id": "acct"}, AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS", {}, InsufficientCredits),
        (grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_EXPIRED", {}, ReservationExpired),
        (grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_NOT_ACTIVE", {}, ReservationNotActive),
        (grpc.StatusCode.FAILED_PRECONDITION, "OVERRUN_REJECTED", {"held": "1"}, OverrunRejected),
        (grpc.StatusCode.FAILED_PRECONDITION, "GRANT_NOT_ACTIVE", {}, FailedPrecondition),
        (grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_SPEND", {}, FailedPrecondition),
        (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_SPEND", {}, FailedPrecondition),
        (grpc.StatusCode.FAILED_PRECONDITION, "BALANCE_LIMIT_EXCEEDED", {}, FailedPrecondition),
        (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", {}, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", {}, PermissionDenied),
        (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE", {}, Unavailable),
        (grpc.StatusCode.INTERNAL, "INTERNAL", {}, ServerError),
    ],
    ids=lambda case: case[1],
)
def test_error_info_maps_to_the_typed_class(
    target: str,
    fake: FakeCreditService,
    case: tuple[grpc.StatusCode, str, dict[str, str], type[CreditlineError]],
) -> None:
    code, reason, metadata, expected = case
    fake.fail("SpendCredits", status(code, "it went wrong", reason=reason, metadata=metadata))

    with CreditlineClient(target, max_attempts=1) as client, pytest.raises(expected) as raised:
        client.spend_credits("acct", "1")

    error = raised.value
    assert type(error) is expected
    assert (error.code, error.reason, error.metadata, error.message) == (
        code,
        reason,
        metadata,
        "it went wrong",
    )
    assert str(error) == f"{code.name} {reason}: it went wrong"


def test_insufficient_credits_carries_exact_amounts(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    fake.fail(
        "SpendCredits",
        status(
            grpc.StatusCode.FAILED_PRECONDITION,
            "account 'acct' has 2.5 credits available, 10 required",
            reason="INSUFFICIENT_CREDITS",
            metadata={
                "account_id": "acct",
                "balance": "3.000001",
                "held": "0.500001",
                "available": "2.5",
                "required": "10",
            },
        ),
    )

    with pytest.raises(InsufficientCredits) as raised:
        client.spend_credits("acct", "10")

    error = raised.value
    assert isinstance(error, FailedPrecondition)
    assert error.account_id == "acct"
    assert error.balance == Decimal("3.000001")
    assert error.held == Decimal("0.500001")
    assert error.available == Decimal("2.5")
    assert error.required == Decimal("10")


def test_insufficient_credits_without_amounts_gives_none(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    fake.fail(
        "SpendCredits",
        status(
            grpc.StatusCode.FAILED_PRECONDITION,
            reason="INSUFFICIENT_CREDITS",
            metadata={"balance": "lots"},
        ),
    )

    with pytest.raises(InsufficientCredits) as raised:
        client.spend_credits("acct", "10")

    assert (raised.value.balance, raised.value.required) == (None, None)


def test_bad_request_names_the_field(client: CreditlineClient, fake: FakeCreditService) -> None:
    fake.fail(
        "SpendCredits",
        status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "amount must be greater than zero",
            reason="INVALID_FIELD",
            metadata={"field": "amount"},
            violations=[("amount", "must be greater than zero")],
        ),
    )

    with pytest.raises(InvalidArgument) as raised:
        client.spend_credits("acct", "0")

    error = raised.value
    assert error.field == "amount"
    [bad_request] = [d for d in error.details if isinstance(d, error_details_pb2.BadRequest)]
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("amount", "must be greater than zero")
    ]
    assert any(isinstance(d, error_details_pb2.ErrorInfo) for d in error.details)


def test_the_field_falls_back_to_the_bad_request(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    fake.fail(
        "SpendCredits",
        status(
            grpc.StatusCode.INVALID_ARGUMENT,
            reason="INVALID_FIELD",
            violations=[("feature", "is too long")],
        ),
    )

    with pytest.raises(InvalidArgument) as raised:
        client.spend_credits("acct", "1")

    assert raised.value.field == "feature"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ServerError),
    ],
)
def test_errors_without_details_map_by_code(
    target: str, fake: FakeCreditService, code: grpc.StatusCode, expected: type[CreditlineError]
) -> None:
    fake.fail("GetAccount", PlainStatus(code, "plain"))

    with CreditlineClient(target, max_attempts=1) as client, pytest.raises(expected) as raised:
        client.get_account("acct")

    error = raised.value
    assert type(error) is expected
    assert (error.code, error.reason, error.metadata, error.field, error.details) == (
        code,
        "",
        {},
        None,
        (),
    )
    assert error.message == "plain"


def test_a_reason_from_another_domain_maps_by_code(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    fake.fail(
        "SpendCredits",
        status(
            grpc.StatusCode.FAILED_PRECONDITION,
            reason="INSUFFICIENT_CREDITS",
            domain="example.com",
        ),
    )

    with pytest.raises(FailedPrecondition) as raised:
        client.spend_credits("acct", "1")

    assert type(raised.value) is FailedPrecondition
    assert raised.value.reason == "INSUFFICIENT_CREDITS"


def test_a_reason_under_the_wrong_code_maps_by_code(
    client: CreditlineClient, fake: FakeCreditService
) -> None:
    fake.fail("SpendCredits", status(grpc.StatusCode.INTERNAL, reason="INSUFFICIENT_CREDITS"))

    with pytest.raises(ServerError) as raised:
        client.spend_credits("acct", "1")

    assert raised.value.code == grpc.StatusCode.INTERNAL


def test_a_bare_rpc_error_maps_to_server_error() -> None:
    error = from_grpc_error(grpc.RpcError("lost"))

    assert type(error) is ServerError
    assert (error.code, error.message) == (grpc.StatusCode.UNKNOWN, "lost")


# Holds.


@pytest.fixture
def holds(fake: FakeCreditService) -> FakeCreditService:
    """The fake answering the three hold RPCs the way the server does."""
    fake.answer(
        "ReserveCredits",
        credit_service_pb2.ReserveCreditsResponse(
            reservation=_reservation("rsv_1", reservation_pb2.RESERVATION_STATUS_ACTIVE)
        ),
    )
    fake.answer(
        "CommitReservation",
        lambda request: credit_service_pb2.CommitReservationResponse(
            reservation=_reservation(
                request.reservation_id, reservation_pb2.RESERVATION_STATUS_COMMITTED
            )
        ),
    )
    fake.answer(
        "ReleaseReservation",
        lambda request: credit_service_pb2.ReleaseReservationResponse(
            reservation=_reservation(
                request.reservation_id, reservation_pb2.RESERVATION_STATUS_RELEASED
            )
        ),
    )
    return fake


def test_hold_commits_on_success(client: CreditlineClient, holds: FakeCreditService) -> None:
    with client.hold("acct", Decimal("10.0"), ttl=timedelta(minutes=1), feature="chat") as hold:
        assert hold.reservation.reservation_id == "rsv_1"
        response = hold.commit("7.50")

    assert response.reservation.status == reservation_pb2.RESERVATION_STATUS_COMMITTED
    assert hold.reservation.status == reservation_pb2.RESERVATION_STATUS_COMMITTED
    assert [seen.method for seen in holds.received] == ["ReserveCredits", "CommitReservation"]
    [reserve] = holds.requests("ReserveCredits")
    [commit] = holds.requests("CommitReservation")
    assert (reserve.account_id, reserve.amount, reserve.feature) == ("acct", "10", "chat")
    assert reserve.ttl.ToTimedelta() == timedelta(minutes=1)
    assert (commit.reservation_id, commit.amount) == ("rsv_1", "7.5")
    assert commit.idempotency_key == f"{reserve.idempotency_key}:commit"
    assert hold.idempotency_key == reserve.idempotency_key


def test_hold_keys_derive_from_the_given_key(
    client: CreditlineClient, holds: FakeCreditService
) -> None:
    holds.fail("CommitReservation", status(grpc.StatusCode.UNAVAILABLE))

    with client.hold("acct", "10", idempotency_key="job-42") as hold:
        hold.commit("10")

    assert [r.idempotency_key for r in holds.requests("ReserveCredits")] == ["job-42"]
    assert [r.idempotency_key for r in holds.requests("CommitReservation")] == [
        "job-42:commit",
        "job-42:commit",
    ]


def test_hold_is_released_when_the_block_raises(
    client: CreditlineClient, holds: FakeCreditService
) -> None:
    with pytest.raises(ZeroDivisionError), client.hold("acct", "10", idempotency_key="job-7"):
        1 / 0  # noqa: B018 - the failure under test

    assert [seen.method for seen in holds.received] == ["ReserveCredits", "ReleaseReservation"]
    [release] = holds.requests("ReleaseReservation")
    assert (release.reservation_id, release.idempotency_key) == ("rsv_1", "job-7:release")


def test_hold_is_released_when_the_block_ends_without_commit(
    client: CreditlineClient, holds: FakeCreditService
) -> None:
    with client.hold("acct", "10") as hold:
        pass

    assert [seen.method for seen in holds.received] == ["ReserveCredits", "ReleaseReservation"]
    assert hold.reservation.status == reservation_pb2.RESERVATION_STATUS_RELEASED


def test_a_failed_release_does_not_mask_the_exception(
    client: CreditlineClient, holds: FakeCreditService
) -> None:
    holds.fail("ReleaseReservation", status(grpc.StatusCode.INTERNAL, "disk on fire"))

    with pytest.raises(KeyError) as raised, client.hold("acct", "10"):
        raise KeyError("work failed")

    assert any("rsv_1" in note and "disk on fire" in note for note in raised.value.__notes__)


def test_a_failed_release_after_a_clean_exit_is_raised(
    client: CreditlineClient, holds: FakeCreditService
) -> None:
    holds.fail("ReleaseReservation", status(grpc.StatusCode.INTERNAL, "disk on fire"))

    with pytest.raises(ServerError, match="disk on fire"), client.hold("acct", "10"):
        pass


def test_committing_twice_is_refused(client: CreditlineClient, holds: FakeCreditService) -> None:
    with client.hold("acct", "10") as hold:
        hold.commit("5")
        with pytest.raises(RuntimeError, match="committed already"):
            hold.commit("5")

    assert len(holds.requests("CommitReservation")) == 1


def test_commit_after_release_and_before_entry_is_refused(
    client: CreditlineClient, holds: FakeCreditService
) -> None:
    hold = client.hold("acct", "10")
    with pytest.raises(RuntimeError, match="not placed yet"):
        hold.commit("1")
    with pytest.raises(RuntimeError, match="not placed yet"):
        _ = hold.reservation

    with hold:
        pass
    with pytest.raises(RuntimeError, match="released already"):
        hold.commit("1")
    assert holds.requests("CommitReservation") == []


def test_a_failed_reserve_propagates_and_releases_nothing(
    client: CreditlineClient, holds: FakeCreditService
) -> None:
    holds.fail(
        "ReserveCredits",
        status(grpc.StatusCode.FAILED_PRECONDITION, reason="INSUFFICIENT_CREDITS"),
    )

    with pytest.raises(InsufficientCredits), client.hold("acct", "10"):
        pytest.fail("the block must not run when nothing was reserved")

    assert holds.requests("ReleaseReservation") == []


def test_an_expired_hold_is_not_released(
    client: CreditlineClient, holds: FakeCreditService
) -> None:
    holds.fail(
        "CommitReservation",
        status(grpc.StatusCode.FAILED_PRECONDITION, reason="RESERVATION_EXPIRED"),
    )

    with pytest.raises(ReservationExpired), client.hold("acct", "10") as hold:
        hold.commit("5")

    assert holds.requests("ReleaseReservation") == []


def test_a_failed_commit_releases_the_hold(
    client: CreditlineClient, holds: FakeCreditService
) -> None:
    holds.fail(
        "CommitReservation",
        status(grpc.StatusCode.FAILED_PRECONDITION, reason="INSUFFICIENT_CREDITS"),
    )

    with pytest.raises(InsufficientCredits), client.hold("acct", "10") as hold:
        hold.commit("50")

    assert len(holds.requests("ReleaseReservation")) == 1
