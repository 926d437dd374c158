"""Bearer tokens and roles on the real gRPC server, in process, on both databases.

The server is built with tokens configured by their SHA-256 hashes only, one per role. Refused
calls must be refused before any use case runs: every table keeps its row count, and an
idempotency key used by a refused call is still fresh afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
import pytest
from creditline import CreditlineClient, PermissionDenied, Unauthenticated
from creditline.errors import from_grpc_error
from creditline.v1 import (
    billing_service_pb2,
    billing_service_pb2_grpc,
    credit_service_pb2,
    credit_service_pb2_grpc,
    grant_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import Engine

from billing_service.logs import JsonFormatter
from billing_service.rpc.auth import Principal, new_token, parse_tokens
from billing_service.rpc.server import RunningServer, build_server
from billing_service.service_layer.context import AppContext
from tests.helpers import table_counts

SERVICE = credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"]
ALL_RPCS = frozenset(method.name for method in SERVICE.methods)
READS = frozenset(
    {
        "GetAccount",
        "ListAccounts",
        "ListGrants",
        "GetReservation",
        "ListReservations",
        "GetBalance",
        "ListLedgerEntries",
    }
)
SPENDING = frozenset({"SpendCredits", "ReserveCredits", "CommitReservation", "ReleaseReservation"})
# What each role may call, written out here rather than read from the server's table.
ALLOWED = {"admin": ALL_RPCS, "service": READS | SPENDING, "reader": READS}


def _token() -> tuple[str, str]:
    token = "cl_" + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


TOKENS = {role: _token() for role in ("admin", "service", "reader", "gateway")}
"""role -> (token, its SHA-256 hex digest)."""
SPEC = ",".join(f"{role}-caller:{role}:{digest}" for role, (_, digest) in TOKENS.items())
"""The CREDITLINE_AUTH_TOKENS value: names, roles and hashes, no token."""


@pytest.fixture
def auth_server(ctx: AppContext) -> Iterator[RunningServer]:
    """The real server in this process, with one token per role."""
    running = build_server(ctx, listen="127.0.0.1:0", tokens=parse_tokens(SPEC), max_workers=8)
    yield running
    running.stop(0)


@pytest.fixture
def target(auth_server: RunningServer) -> str:
    """The server's address."""
    return f"127.0.0.1:{auth_server.port}"


@pytest.fixture
def clients(target: str) -> Iterator[dict[str | None, CreditlineClient]]:
    """A client per role, and one without a token under None."""
    with ExitStack() as stack:
        yield {
            role: stack.enter_context(
                CreditlineClient(target, token=TOKENS[role][0] if role else None, backoff=0)
            )
            for role in (None, *TOKENS)
        }


@pytest.fixture
def channel(target: str) -> Iterator[grpc.Channel]:
    """A plain channel, for metadata and services the typed client does not send or call."""
    with grpc.insecure_channel(target) as channel:
        yield channel


@dataclass(frozen=True)
class Book:
    """An account with some history, made by the admin: a grant, a spend and an active hold."""

    account_id: str
    grant_id: str
    spend_entry_id: str
    reservation_id: str


@pytest.fixture
def book(clients: dict[str | None, CreditlineClient]) -> Book:
    """A fresh account with a grant of 100, a spend of 10 and a hold of 5."""
    admin = clients["admin"]
    account_id = f"auth-{uuid.uuid4().hex[:12]}"
    admin.create_account(account_id)
    grant = admin.grant_credits(account_id, 100, source=grant_pb2.GRANT_SOURCE_PURCHASE)
    spend = admin.spend_credits(account_id, 10)
    hold = admin.reserve_credits(account_id, 5)
    return Book(
        account_id,
        grant.grant.grant_id,
        spend.ledger_entry.entry_id,
        hold.reservation.reservation_id,
    )


def balance_of(client: CreditlineClient, account_id: str) -> tuple[Decimal, Decimal]:
    """(balance, held) of an account."""
    balance = client.get_balance(account_id).balance
    return Decimal(balance.balance), Decimal(balance.held)


def test_no_token_is_unauthenticated_and_writes_nothing(
    clients: dict[str | None, CreditlineClient], book: Book, engine: Engine
) -> None:
    anonymous = clients[None]
    before = table_counts(engine)
    key = uuid.uuid4().hex

    calls: list[Callable[[], object]] = [
        lambda: anonymous.spend_credits(book.account_id, 1, idempotency_key=key),
        lambda: anonymous.grant_credits(book.account_id, 1, source=grant_pb2.GRANT_SOURCE_PURCHASE),
        lambda: anonymous.create_account(f"anon-{uuid.uuid4().hex[:12]}"),
        lambda: anonymous.get_balance(book.account_id),
    ]
    for call in calls:
        with pytest.raises(Unauthenticated) as refused:
            call()
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.reason == "UNAUTHENTICATED"

    assert table_counts(engine) == before
    retried = clients["service"].spend_credits(book.account_id, 1, idempotency_key=key)
    assert not retried.replayed


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("cl_" + secrets.token_urlsafe(32), id="unknown"),
        pytest.param(TOKENS["admin"][1], id="the-hash-itself"),
        pytest.param(TOKENS["admin"][0] + "x", id="admin-token-plus-a-character"),
        pytest.param(TOKENS["admin"][0][:-1], id="admin-token-less-a-character"),
    ],
)
def test_unknown_token_is_unauthenticated(
    target: str, book: Book, engine: Engine, token: str
) -> None:
    before = table_counts(engine)

    with CreditlineClient(target, token=token, backoff=0) as stranger:
        with pytest.raises(Unauthenticated):
            stranger.get_balance(book.account_id)
        with pytest.raises(Unauthenticated):
            stranger.spend_credits(book.account_id, 1)

    assert table_counts(engine) == before


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic x", id="basic"),
        pytest.param("Bearer", id="bearer-alone"),
        pytest.param("Bearer ", id="bearer-blank"),
        pytest.param(f"Basic {TOKENS['admin'][0]}", id="admin-token-as-basic"),
        pytest.param(TOKENS["admin"][0], id="admin-token-without-scheme"),
        pytest.param(f"Token {TOKENS['admin'][0]}", id="admin-token-other-scheme"),
    ],
)
def test_malformed_authorization_is_unauthenticated(
    channel: grpc.Channel, book: Book, engine: Engine, header: str
) -> None:
    stub = credit_service_pb2_grpc.CreditServiceStub(channel)
    before = table_counts(engine)

    with pytest.raises(grpc.RpcError) as refused:
        stub.SpendCredits(
            credit_service_pb2.SpendCreditsRequest(
                account_id=book.account_id, amount="1", idempotency_key=uuid.uuid4().hex
            ),
            metadata=(("authorization", header),),
            timeout=10,
        )

    assert isinstance(from_grpc_error(refused.value), Unauthenticated)
    assert table_counts(engine) == before


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(f"bearer {TOKENS['service'][0]}", id="lower-case-scheme"),
        pytest.param(f"BEARER  {TOKENS['service'][0]}", id="upper-case-scheme-two-spaces"),
    ],
)
def test_bearer_scheme_is_case_insensitive(channel: grpc.Channel, book: Book, header: str) -> None:
    stub = credit_service_pb2_grpc.CreditServiceStub(channel)

    answer = stub.GetBalance(
        credit_service_pb2.GetBalanceRequest(account_id=book.account_id),
        metadata=(("authorization", header),),
        timeout=10,
    )

    assert Decimal(answer.balance.balance) == 90


DENIED: list[tuple[str, str, Callable[[CreditlineClient, Book, str], Any]]] = [
    ("reader", "SpendCredits", lambda c, b, k: c.spend_credits(b.account_id, 1, idempotency_key=k)),
    (
        "reader",
        "ReserveCredits",
        lambda c, b, k: c.reserve_credits(b.account_id, 1, idempotency_key=k),
    ),
    (
        "reader",
        "CommitReservation",
        lambda c, b, k: c.commit_reservation(b.reservation_id, 1, idempotency_key=k),
    ),
    (
        "reader",
        "ReleaseReservation",
        lambda c, b, k: c.release_reservation(b.reservation_id, idempotency_key=k),
    ),
    (
        "service",
        "GrantCredits",
        lambda c, b, k: c.grant_credits(
            b.account_id, 1, source=grant_pb2.GRANT_SOURCE_PURCHASE, idempotency_key=k
        ),
    ),
    ("service", "CreateAccount", lambda c, b, k: c.create_account(k, idempotency_key=k)),
    (
        "service",
        "UpdateAccount",
        lambda c, b, k: c.update_account(b.account_id, metadata={"x": "y"}, idempotency_key=k),
    ),
    ("service", "VoidGrant", lambda c, b, k: c.void_grant(b.grant_id, idempotency_key=k)),
    (
        "service",
        "RefundSpend",
        lambda c, b, k: c.refund_spend(b.spend_entry_id, idempotency_key=k),
    ),
]


@pytest.mark.parametrize(
    ("role", "rpc", "call"), DENIED, ids=[f"{role}-{rpc}" for role, rpc, _ in DENIED]
)
def test_wrong_role_is_permission_denied_and_writes_nothing(
    clients: dict[str | None, CreditlineClient],
    book: Book,
    engine: Engine,
    role: str,
    rpc: str,
    call: Callable[[CreditlineClient, Book, str], Any],
) -> None:
    before = table_counts(engine)
    balance_before = balance_of(clients["admin"], book.account_id)
    key = uuid.uuid4().hex

    with pytest.raises(PermissionDenied) as refused:
        call(clients[role], book, key)

    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.reason == "PERMISSION_DENIED"
    assert rpc in refused.value.message
    assert f"{role}-caller" in refused.value.message
    assert table_counts(engine) == before
    assert balance_of(clients["admin"], book.account_id) == balance_before
    # The refused call stored no idempotency record: its key is fresh for the admin.
    assert not call(clients["admin"], book, key).replayed


def test_admin_may_call_everything(clients: dict[str | None, CreditlineClient], book: Book) -> None:
    admin = clients["admin"]
    child = f"child-{uuid.uuid4().hex[:12]}"

    admin.create_account(child, parent_account_id=book.account_id)
    admin.update_account(child, metadata={"team": "ml"})
    granted = admin.grant_credits(child, 50, source=grant_pb2.GRANT_SOURCE_PROMOTIONAL)
    spent = admin.spend_credits(child, 20)
    refunded = admin.refund_spend(spent.ledger_entry.entry_id, amount=5)
    with admin.hold(child, 10) as h:
        h.commit(4)
    released = admin.release_reservation(book.reservation_id)
    voided = admin.void_grant(granted.grant.grant_id)

    assert Decimal(refunded.ledger_entry.amount) == 5
    assert released.reservation.reservation_id == book.reservation_id
    assert Decimal(voided.ledger_entry.amount) == -(50 - 20 + 5 - 4)
    assert balance_of(admin, child) == (Decimal(0), Decimal(0))
    assert admin.get_account(child).account.metadata == {"team": "ml"}
    assert [a.account_id for a in admin.iter_accounts(parent_account_id=book.account_id)] == [child]
    assert len(admin.list_grants(child).grants) == 1
    assert len(admin.list_reservations(child).reservations) == 1
    assert admin.get_reservation(h.reservation.reservation_id).reservation.committed_amount == "4"
    assert len(admin.list_ledger_entries(child).ledger_entries) == 5


def test_service_may_spend_hold_and_read_balances(
    clients: dict[str | None, CreditlineClient], book: Book
) -> None:
    service = clients["service"]

    spent = service.spend_credits(book.account_id, 3)
    with service.hold(book.account_id, 10) as h:
        h.commit("2.5")
    released = service.release_reservation(book.reservation_id)
    reserved = service.reserve_credits(book.account_id, 1)
    committed = service.commit_reservation(reserved.reservation.reservation_id, 1)

    assert Decimal(spent.available) == 100 - 10 - 5 - 3
    assert released.reservation.reservation_id == book.reservation_id
    assert committed.reservation.reservation_id == reserved.reservation.reservation_id
    assert balance_of(service, book.account_id) == (100 - 10 - 3 - Decimal("2.5") - 1, Decimal(0))


def test_reader_may_read_everything(
    clients: dict[str | None, CreditlineClient], book: Book
) -> None:
    reader = clients["reader"]

    assert reader.get_account(book.account_id).account.account_id == book.account_id
    assert book.account_id in [a.account_id for a in reader.iter_accounts()]
    assert [g.grant_id for g in reader.list_grants(book.account_id).grants] == [book.grant_id]
    assert reader.get_reservation(book.reservation_id).reservation.amount == "5"
    assert [r.reservation_id for r in reader.list_reservations(book.account_id).reservations] == [
        book.reservation_id
    ]
    assert balance_of(reader, book.account_id) == (Decimal(90), Decimal(5))
    assert book.spend_entry_id in [
        e.entry_id for e in reader.list_ledger_entries(book.account_id).ledger_entries
    ]


@pytest.mark.parametrize("role", sorted(ALLOWED))
def test_every_rpc_checks_the_role(channel: grpc.Channel, engine: Engine, role: str) -> None:
    # Empty requests: an allowed call gets past auth and fails validation (or lists nothing),
    # a refused one is PERMISSION_DENIED; none of them may write.
    stub = credit_service_pb2_grpc.CreditServiceStub(channel)
    before = table_counts(engine)
    codes: dict[str, grpc.StatusCode] = {}

    for method in SERVICE.methods:
        request = getattr(credit_service_pb2, method.input_type.name)()
        try:
            getattr(stub, method.name)(
                request, metadata=(("authorization", f"Bearer {TOKENS[role][0]}"),), timeout=10
            )
            codes[method.name] = grpc.StatusCode.OK
        except grpc.RpcError as error:
            codes[method.name] = error.code()

    denied = {name for name, code in codes.items() if code == grpc.StatusCode.PERMISSION_DENIED}
    assert denied == ALL_RPCS - ALLOWED[role]
    assert grpc.StatusCode.UNAUTHENTICATED not in codes.values()
    assert table_counts(engine) == before


BILLING = billing_service_pb2.DESCRIPTOR.services_by_name["BillingService"]
ALL_BILLING = frozenset(method.name for method in BILLING.methods)
BILLING_READS = frozenset(
    {
        "EstimateCost",
        "ListPriceBooks",
        "ListModelPrices",
        "GetModelPrice",
        "ListTiers",
        "ListPlans",
        "ListCreditPackages",
        "GetEntitlements",
        "ListSubscriptions",
    }
)
BILLING_ALLOWED = {
    "admin": ALL_BILLING,
    "service": BILLING_READS
    | {"ListAccountPriceOverrides", "CreateCheckoutSession", "CreatePortalSession"},
    "reader": BILLING_READS | {"ListAccountPriceOverrides"},
    "gateway": BILLING_READS | {"ApplyStripeEvent"},
}


@pytest.mark.parametrize("role", sorted(BILLING_ALLOWED))
def test_every_billing_rpc_checks_the_role(
    channel: grpc.Channel, engine: Engine, role: str
) -> None:
    stub = billing_service_pb2_grpc.BillingServiceStub(channel)
    before = table_counts(engine)
    codes: dict[str, grpc.StatusCode] = {}
    for method in BILLING.methods:
        request = getattr(billing_service_pb2, method.input_type.name)()
        try:
            getattr(stub, method.name)(
                request, metadata=(("authorization", f"Bearer {TOKENS[role][0]}"),), timeout=10
            )
            codes[method.name] = grpc.StatusCode.OK
        except grpc.RpcError as error:
            codes[method.name] = error.code()
    denied = {name for name, code in codes.items() if code == grpc.StatusCode.PERMISSION_DENIED}
    assert denied == ALL_BILLING - BILLING_ALLOWED[role]
    assert table_counts(engine) == before


def test_health_and_reflection_are_open_without_a_token(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

    overall = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    credit = health.Check(health_pb2.HealthCheckRequest(service=SERVICE.full_name), timeout=10)
    answers = list(
        reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
    )

    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert credit.status == health_pb2.HealthCheckResponse.SERVING
    assert len(answers) == 1
    listed = {s.name for s in answers[0].list_services_response.service}
    assert {SERVICE.full_name, "grpc.health.v1.Health"} <= listed


def test_tokens_never_reach_the_logs(
    clients: dict[str | None, CreditlineClient], book: Book, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    clients["service"].get_balance(book.account_id)
    with pytest.raises(PermissionDenied):
        clients["reader"].spend_credits(book.account_id, 1)

    formatter = JsonFormatter()
    written = [json.loads(formatter.format(record)) for record in caplog.records]
    access = [(r["method"], r["code"]) for r in written if r["logger"] == "creditline.access"]
    assert access == [
        ("/creditline.v1.CreditService/GetBalance", "OK"),
        ("/creditline.v1.CreditService/SpendCredits", "PERMISSION_DENIED"),
    ]
    text = "\n".join(formatter.format(record) for record in caplog.records)
    for token, _ in TOKENS.values():
        assert token not in text


def test_parse_tokens_reads_names_roles_and_hashes() -> None:
    one, two = hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two").hexdigest()

    table = parse_tokens(f" api:service:{one} , ops:service+reader:{two},")

    assert table == {
        one: Principal("api", frozenset({"service"})),
        two: Principal("ops", frozenset({"service", "reader"})),
    }
    assert parse_tokens("") == {}


HEX = hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(f"api:service:{HEX[:-1]}", id="hash-too-short"),
        pytest.param(f"api:service:{HEX}0", id="hash-too-long"),
        pytest.param(f"api:service:{HEX.upper()}", id="hash-upper-case"),
        pytest.param(f"api:service:{'g' * 64}", id="hash-not-hex"),
        pytest.param(f"api:root:{HEX}", id="unknown-role"),
        pytest.param(f"api:service+root:{HEX}", id="one-unknown-role"),
        pytest.param(f"api::{HEX}", id="no-role"),
        pytest.param(f":service:{HEX}", id="no-name"),
        pytest.param("api:service", id="no-hash"),
        pytest.param(f"api:service:{HEX}:extra", id="four-fields"),
        pytest.param(HEX, id="hash-alone"),
        pytest.param(f"api:service:{HEX},broken", id="second-entry-broken"),
    ],
)
def test_parse_tokens_refuses_bad_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="auth token"):
        parse_tokens(entry)


def test_tokens_are_configured_by_hash_only() -> None:
    token, digest = new_token()
    entry = f"api:service:{digest}"

    table = parse_tokens(entry)

    assert token not in entry
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert set(table) == {digest}
    assert token not in SPEC
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        parse_tokens(f"api:service:{token}")
