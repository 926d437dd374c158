"""The server's life: a stop lets the calls in flight finish and answers them, coroutine handlers
(whose flush runs on another thread) included, and takes no new ones."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import grpc
import pytest
from creditline import CreditlineClient
from creditline.errors import Unavailable
from creditline.v1 import credit_service_pb2, credit_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from billing_service.rpc.server import build_server
from billing_service.service_layer import queries
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.unit_of_work import Database, Tx
from tests.integration.test_group_commit import c, open_account

T = TypeVar("T")


class GatedWrites:
    """The real database, whose first write transaction waits at a gate."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.engine = db.engine
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, work: Callable[[Tx], T]) -> T:
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(10)
        return self._db.write(work)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def serving_status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return health_pb2.HealthCheckResponse.NOT_SERVING
        return answer.status


def test_stop_answers_a_spend_in_flight_and_refuses_new_calls(ctx: AppContext) -> None:
    open_account(ctx, "a", "5")
    gated = GatedWrites(ctx.db)
    running = build_server(replace(ctx, db=gated), listen="127.0.0.1:0", tokens={})  # type: ignore[arg-type]
    port = running.port
    with CreditlineClient(f"127.0.0.1:{port}", backoff=0) as client, ThreadPoolExecutor(2) as pool:
        spend = pool.submit(client.spend_credits, "a", "2", idempotency_key="in-flight")
        assert gated.entered.wait(10)  # the spend's flush is inside its transaction
        stopping = pool.submit(running.stop, 30)
        deadline = time.monotonic() + 10
        while serving_status(port) == health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "the stop never began"
            time.sleep(0.01)  # waiting for a condition, with a deadline

        gated.gate.set()
        answered = spend.result(20)
        stopping.result(30)

        with pytest.raises(Unavailable):
            client.get_balance("a", timeout=2)
    assert answered.available == "3"
    assert queries.get_balance(ctx, "a").balance == c("3")


def test_a_caller_out_of_time_is_logged_as_such_and_its_spend_lands_once(
    ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="creditline.access")
    open_account(ctx, "a", "5")
    gated = GatedWrites(ctx.db)
    running = build_server(replace(ctx, db=gated), listen="127.0.0.1:0", tokens={})  # type: ignore[arg-type]
    request = credit_service_pb2.SpendCreditsRequest(
        account_id="a", amount="2", idempotency_key="gave-up"
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = credit_service_pb2_grpc.CreditServiceStub(channel)
            with pytest.raises(grpc.RpcError) as gave_up:
                stub.SpendCredits(request, timeout=0.5)  # the flush is held at the gate
            assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

            def logged_codes() -> list[str]:
                return [r.code for r in caplog.records if r.name == "creditline.access"]  # type: ignore[attr-defined]

            deadline = time.monotonic() + 10
            while "DEADLINE_EXCEEDED" not in logged_codes():
                assert time.monotonic() < deadline, f"no DEADLINE_EXCEEDED: {logged_codes()}"
                time.sleep(0.01)  # waiting for a condition, with a deadline
            gated.gate.set()

            retried = stub.SpendCredits(request, timeout=10)
    finally:
        running.stop(5)
    # The cancelled call's write was already in its flush: it landed, and the retry replays it.
    assert retried.replayed
    assert retried.available == "3"
    assert queries.get_balance(ctx, "a").balance == c("3")


class GatedReads(GatedWrites):
    """The real database, whose first read waits at a gate."""

    def read(self, work: Callable[[Tx], T]) -> T:
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(10)
        return self._db.read(work)


def test_stop_returns_past_a_handler_that_outlives_the_grace_and_twice_is_harmless(
    ctx: AppContext,
) -> None:
    open_account(ctx, "a", "5")
    gated = GatedReads(ctx.db)
    running = build_server(replace(ctx, db=gated), listen="127.0.0.1:0", tokens={})  # type: ignore[arg-type]
    with (
        CreditlineClient(f"127.0.0.1:{running.port}", backoff=0) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        stuck = pool.submit(client.get_account, "a", timeout=20)  # a plain-function handler
        assert gated.entered.wait(10)
        stopper = threading.Thread(target=running.stop, args=(0.1,))
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive()  # it did not wait for the handler still reading
        running.stop(0.1)  # a second stop does nothing
        gated.gate.set()
        with pytest.raises(Exception):  # noqa: B017 - cancelled at the end of the grace
            stuck.result(20)
