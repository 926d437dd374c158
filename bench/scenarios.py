"""The scenarios: the one operation a load-generator thread repeats, and the data it runs on.

Each scenario is an `Operation` (a no-argument callable that performs one call, or one
Reserve+Commit pair, and raises on failure) opened per thread by `open_operation`, with the
thread's own gRPC channel (its own TCP connection: local subchannel pool) or its own psycopg
connection. The data is a `Fixture` built once through the real API before the load starts:
many ordinary accounts and one hot account with grants far larger than the run can spend, the
estimate request checked against the server's price book, and, for the raw psycopg baseline,
two tables holding the same accounts.

The baseline is the naive debit a hand-written ledger would run per spend, on its own psycopg
connection at READ COMMITTED: SELECT … FOR UPDATE; INSERT the ledger row; UPDATE the balance;
COMMIT. It prices what PostgreSQL itself costs per debit on this machine, so the service's rate
over the baseline's rate is a figure that survives a noisy host.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import psycopg
from creditline.v1 import (
    account_pb2,
    billing_service_pb2,
    billing_service_pb2_grpc,
    credit_service_pb2,
    credit_service_pb2_grpc,
    grant_pb2,
    pricing_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

Operation = Callable[[], None]
"""One unit of work: a call, or a Reserve+Commit pair; raises when it fails."""

CALL_TIMEOUT = 30.0
"""Seconds a benchmark call may take before it counts as DEADLINE_EXCEEDED."""
CONNECT_TIMEOUT = 15.0
"""Seconds a thread's channel may take to connect."""
SPEND_AMOUNT = "0.01"
"""Credits per spend: small, so no account runs dry however fast the server is."""
HOLD_AMOUNT = "0.02"
"""Credits each reservation holds; its commit charges SPEND_AMOUNT and frees the rest."""
ACCOUNT_GRANT = "1000000"
"""Credits granted to each of the many accounts (at most 1e9 per grant)."""
HOT_GRANT = "1000000000"
"""Credits granted to the hot account: the most one grant may carry."""
BASELINE_DEBIT_MICROS = 10_000
"""The baseline's debit, in micro-credits: SPEND_AMOUNT."""
BASELINE_BALANCE_MICROS = 10**15
"""The baseline accounts' opening balance, in micro-credits."""
SETUP_THREADS = 16
"""Concurrent calls while the accounts are created and funded."""


@dataclass(frozen=True)
class Scenario:
    """A row of the table: what is driven and what one completed unit is called."""

    name: str
    label: str
    unit: str = "req"
    baseline: bool = False
    """True for the raw psycopg scenarios, which do not touch the server."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("health", "Health/Check"),
    Scenario("get_balance", "GetBalance"),
    Scenario("spend_many", "SpendCredits, many accounts"),
    Scenario("spend_hot", "SpendCredits, one hot account"),
    Scenario("reserve_commit", "Reserve+Commit pairs", unit="pair"),
    Scenario("estimate_cost", "EstimateCost"),
    Scenario("raw_many", "raw psycopg debit, many accts", baseline=True),
    Scenario("raw_hot", "raw psycopg debit, hot account", baseline=True),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


@dataclass(frozen=True)
class Fixture:
    """Everything a load-generator process needs to open any scenario's operation."""

    address: str
    account_ids: tuple[str, ...]
    hot_account_id: str
    estimate_request: bytes
    """A serialized EstimateCostRequest that the server answered during set-up."""
    baseline_url: str | None
    """The PostgreSQL database holding the baseline tables, or None when there is none."""


PREFERRED_ESTIMATE = pricing_pb2.Usage(
    lines=[
        pricing_pb2.UsageLine(
            provider="openai", model="gpt-4o", input_tokens=1_200, output_tokens=400
        ),
        pricing_pb2.UsageLine(
            provider="anthropic",
            model="claude-sonnet-4-5-20250929",
            input_tokens=2_000,
            output_tokens=800,
        ),
    ],
    tier="TIER_1A",
    tier_quantity=1,
)
"""A typical estimate: two models' input and output tokens plus a tier's base fee."""


@contextmanager
def open_operation(scenario: str, fixture: Fixture) -> Iterator[Operation]:
    """The scenario's operation on a connection of its own, closed when the block ends."""
    if BY_NAME[scenario].baseline:
        if fixture.baseline_url is None:
            raise ValueError(f"{scenario} needs a PostgreSQL baseline database")
        with psycopg.connect(fixture.baseline_url, autocommit=False) as conn:
            ids = (fixture.hot_account_id,) if scenario == "raw_hot" else fixture.account_ids
            yield _baseline_debit(conn, _picker(ids))
        return
    with open_channel(fixture.address) as channel:
        yield _GRPC_OPERATIONS[scenario](channel, fixture)


@contextmanager
def open_channel(address: str) -> Iterator[grpc.Channel]:
    """A connected channel with its own subchannel, so each thread has its own connection."""
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
        yield channel
    finally:
        channel.close()


def _picker(ids: Sequence[str]) -> Callable[[], str]:
    """A thread's own uniform random choice among ids, seeded apart from every other thread."""
    if len(ids) == 1:
        only = ids[0]
        return lambda: only
    rng = random.Random(uuid.uuid4().int)
    return lambda: rng.choice(ids)


def _keys() -> Iterator[str]:
    """Idempotency keys unique to this thread: a random prefix and a counter."""
    prefix = uuid.uuid4().hex
    return (f"bench-{prefix}-{n}" for n in itertools.count())


def _health(channel: grpc.Channel, _fixture: Fixture) -> Operation:
    check = health_pb2_grpc.HealthStub(channel).Check
    request = health_pb2.HealthCheckRequest(service="")

    def call() -> None:
        check(request, timeout=CALL_TIMEOUT)

    return call


def _get_balance(channel: grpc.Channel, fixture: Fixture) -> Operation:
    get_balance = credit_service_pb2_grpc.CreditServiceStub(channel).GetBalance
    pick = _picker(fixture.account_ids)

    def call() -> None:
        get_balance(credit_service_pb2.GetBalanceRequest(account_id=pick()), timeout=CALL_TIMEOUT)

    return call


def _spend(ids: Sequence[str]) -> Callable[[grpc.Channel, Fixture], Operation]:
    def opener(channel: grpc.Channel, _fixture: Fixture) -> Operation:
        spend = credit_service_pb2_grpc.CreditServiceStub(channel).SpendCredits
        pick, keys = _picker(ids), _keys()

        def call() -> None:
            spend(
                credit_service_pb2.SpendCreditsRequest(
                    account_id=pick(),
                    amount=SPEND_AMOUNT,
                    feature="bench",
                    idempotency_key=next(keys),
                ),
                timeout=CALL_TIMEOUT,
            )

        return call

    return opener


def _spend_many(channel: grpc.Channel, fixture: Fixture) -> Operation:
    return _spend(fixture.account_ids)(channel, fixture)


def _spend_hot(channel: grpc.Channel, fixture: Fixture) -> Operation:
    return _spend((fixture.hot_account_id,))(channel, fixture)


def _reserve_commit(channel: grpc.Channel, fixture: Fixture) -> Operation:
    stub = credit_service_pb2_grpc.CreditServiceStub(channel)
    pick, keys = _picker(fixture.account_ids), _keys()

    def pair() -> None:
        held = stub.ReserveCredits(
            credit_service_pb2.ReserveCreditsRequest(
                account_id=pick(), amount=HOLD_AMOUNT, feature="bench", idempotency_key=next(keys)
            ),
            timeout=CALL_TIMEOUT,
        )
        stub.CommitReservation(
            credit_service_pb2.CommitReservationRequest(
                reservation_id=held.reservation.reservation_id,
                amount=SPEND_AMOUNT,
                idempotency_key=next(keys),
            ),
            timeout=CALL_TIMEOUT,
        )

    return pair


def _estimate_cost(channel: grpc.Channel, fixture: Fixture) -> Operation:
    estimate = billing_service_pb2_grpc.BillingServiceStub(channel).EstimateCost
    request = billing_service_pb2.EstimateCostRequest.FromString(fixture.estimate_request)

    def call() -> None:
        estimate(request, timeout=CALL_TIMEOUT)

    return call


_GRPC_OPERATIONS: dict[str, Callable[[grpc.Channel, Fixture], Operation]] = {
    "health": _health,
    "get_balance": _get_balance,
    "spend_many": _spend_many,
    "spend_hot": _spend_hot,
    "reserve_commit": _reserve_commit,
    "estimate_cost": _estimate_cost,
}


class InsufficientBalance(Exception):
    """The baseline account could not cover the debit (never expected: balances are huge)."""


def _baseline_debit(conn: psycopg.Connection[tuple[int]], pick: Callable[[], str]) -> Operation:
    """The naive ledger debit as one transaction on conn."""
    cursor = conn.cursor()

    def debit() -> None:
        account_id = pick()
        try:
            cursor.execute(
                "SELECT balance FROM bench_accounts WHERE id = %s FOR UPDATE", (account_id,)
            )
            row = cursor.fetchone()
            if row is None or row[0] < BASELINE_DEBIT_MICROS:
                raise InsufficientBalance(account_id)
            cursor.execute(
                "INSERT INTO bench_ledger (account_id, amount) VALUES (%s, %s)",
                (account_id, -BASELINE_DEBIT_MICROS),
            )
            cursor.execute(
                "UPDATE bench_accounts SET balance = balance - %s WHERE id = %s",
                (BASELINE_DEBIT_MICROS, account_id),
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    return debit


def create_accounts(address: str, count: int) -> tuple[tuple[str, ...], str]:
    """Create and fund count accounts and one hot account through the API; (ids, hot id)."""
    run = uuid.uuid4().hex[:8]
    ids = tuple(f"bench-{run}-{n:05d}" for n in range(count))
    hot = f"bench-{run}-hot"
    with open_channel(address) as channel:
        stub = credit_service_pb2_grpc.CreditServiceStub(channel)

        def fund(account_id: str, amount: str) -> None:
            stub.CreateAccount(
                credit_service_pb2.CreateAccountRequest(
                    account=account_pb2.Account(
                        account_id=account_id, billing_mode=account_pb2.BILLING_MODE_PREPAID
                    ),
                    idempotency_key=f"create-{account_id}",
                ),
                timeout=CALL_TIMEOUT,
            )
            stub.GrantCredits(
                credit_service_pb2.GrantCreditsRequest(
                    account_id=account_id,
                    amount=amount,
                    source=grant_pb2.GRANT_SOURCE_PROMOTIONAL,
                    description="benchmark funds",
                    idempotency_key=f"grant-{account_id}",
                ),
                timeout=CALL_TIMEOUT,
            )

        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            done = [pool.submit(fund, account_id, ACCOUNT_GRANT) for account_id in ids]
            done.append(pool.submit(fund, hot, HOT_GRANT))
            for future in done:
                future.result()
    return ids, hot


def choose_estimate(address: str) -> tuple[billing_service_pb2.EstimateCostRequest, str]:
    """The estimate request to drive, checked against the server; (request, a note).

    PREFERRED_ESTIMATE when the price book in force prices it; otherwise two models of
    different providers and the first tier that ListModelPrices and ListTiers offer.
    """
    with open_channel(address) as channel:
        billing = billing_service_pb2_grpc.BillingServiceStub(channel)
        request = billing_service_pb2.EstimateCostRequest(usage=PREFERRED_ESTIMATE)
        try:
            billing.EstimateCost(request, timeout=CALL_TIMEOUT)
            return request, "EstimateCost: openai/gpt-4o + anthropic/claude-sonnet-4-5, TIER_1A"
        except grpc.RpcError as error:
            reason = f"{error.code().name}: {error.details()}"
        prices = billing.ListModelPrices(
            billing_service_pb2.ListModelPricesRequest(page_size=1000), timeout=CALL_TIMEOUT
        ).prices
        tiers = billing.ListTiers(billing_service_pb2.ListTiersRequest(), timeout=CALL_TIMEOUT)
        chosen: dict[str, pricing_pb2.ModelPrice] = {}
        for price in prices:
            if price.input_per_mtok and price.output_per_mtok:
                chosen.setdefault(price.provider, price)
        lines = [
            pricing_pb2.UsageLine(
                provider=price.provider,
                model=price.model,
                input_tokens=1_500,
                output_tokens=500,
            )
            for price in list(chosen.values())[:2]
        ]
        tier = tiers.tiers[0].name if tiers.tiers else ""
        request = billing_service_pb2.EstimateCostRequest(
            usage=pricing_pb2.Usage(lines=lines, tier=tier, tier_quantity=1 if tier else 0)
        )
        billing.EstimateCost(request, timeout=CALL_TIMEOUT)
        models = " + ".join(f"{line.provider}/{line.model}" for line in lines)
        return request, f"EstimateCost: {models}, {tier or 'no tier'} (preferred one: {reason})"


def prepare_baseline(url: str, ids: Sequence[str], hot: str) -> None:
    """Create and fill the baseline's tables: the same accounts, with huge balances."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_ledger, bench_accounts")
        conn.execute("CREATE TABLE bench_accounts (id text PRIMARY KEY, balance bigint NOT NULL)")
        conn.execute(
            "CREATE TABLE bench_ledger (id bigserial PRIMARY KEY, account_id text NOT NULL,"
            " amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        with conn.cursor().copy("COPY bench_accounts (id, balance) FROM STDIN") as copy:
            for account_id in (*ids, hot):
                copy.write_row((account_id, BASELINE_BALANCE_MICROS))
        conn.execute("ANALYZE bench_accounts")
