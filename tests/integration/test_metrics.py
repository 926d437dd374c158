"""Metrics count what the server answered and what the sweeper did."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.request import urlopen

import pytest
from creditline import CreditlineClient, InsufficientCredits
from creditline.v1 import grant_pb2

from billing_service.domain.clock import ManualClock
from billing_service.jobs.sweeper import Sweeper
from billing_service.metrics import Metrics
from billing_service.rpc.server import build_server
from billing_service.service_layer.context import AppContext

SPEND = "/creditline.v1.CreditService/SpendCredits"


@pytest.fixture
def observed(ctx: AppContext) -> Iterator[tuple[CreditlineClient, Metrics]]:
    metrics = Metrics()
    running = build_server(ctx, listen="127.0.0.1:0", tokens={}, metrics=metrics)
    try:
        with CreditlineClient(f"127.0.0.1:{running.port}", backoff=0) as client:
            yield client, metrics
    finally:
        running.stop(0)


def test_rpcs_are_counted_by_method_and_code(
    observed: tuple[CreditlineClient, Metrics],
) -> None:
    client, metrics = observed
    client.create_account("acct")
    client.grant_credits("acct", "5", source=grant_pb2.GRANT_SOURCE_PURCHASE)
    client.spend_credits("acct", "2")
    client.spend_credits("acct", "2")
    with pytest.raises(InsufficientCredits):
        client.spend_credits("acct", "2")

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert sample("creditline_rpc_total", method=SPEND, code="OK") == 2
    assert sample("creditline_rpc_total", method=SPEND, code="FAILED_PRECONDITION") == 1
    assert sample("creditline_rpc_duration_seconds_count", method=SPEND) == 3
    assert sample("creditline_rpc_duration_seconds_sum", method=SPEND) > 0


def test_the_sweeper_counts_the_accounts_it_swept(
    observed: tuple[CreditlineClient, Metrics], ctx: AppContext, clock: ManualClock
) -> None:
    client, metrics = observed
    for name in ("a", "b"):
        client.create_account(name)
        client.grant_credits(
            name,
            "5",
            source=grant_pb2.GRANT_SOURCE_PROMOTIONAL,
            expire_time=clock.now() + timedelta(hours=1),
        )
    clock.advance(timedelta(hours=2))
    assert Sweeper(ctx, interval=60, batch=10, metrics=metrics).run_once().swept == 2
    assert metrics.registry.get_sample_value("creditline_sweeper_accounts_total") == 2


def test_metrics_are_exported_over_http(observed: tuple[CreditlineClient, Metrics]) -> None:
    client, metrics = observed
    client.create_account("acct")
    address = metrics.serve("127.0.0.1:0")
    with urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert (
        'creditline_rpc_total{code="OK",method="/creditline.v1.CreditService/CreateAccount"} 1.0'
        in text
    )
