"""`creditline serve --workers N`: N server processes answer on one port, and stop together."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from creditline import CreditlineClient
from creditline.v1 import grant_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import ServerProcess, creditline_env

pytestmark = pytest.mark.e2e


def test_workers_share_one_port_and_stop_together(tmp_path: Path) -> None:
    env = creditline_env(f"sqlite:///{tmp_path / 'creditline.db'}")
    with ServerProcess(["serve", "--workers", "2"], env, tmp_path) as supervisor:
        supervisor.wait_for_log(
            lambda _: sum(r.get("message") == "serving" for r in supervisor.records()) == 2
        )
        serving = [r for r in supervisor.records() if r.get("message") == "serving"]
        addresses = {r["address"] for r in serving}
        assert len(addresses) == 1
        assert len({r["pid"] for r in serving}) == 2
        (address,) = addresses
        assert not address.endswith(":0")

        with grpc.insecure_channel(address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        with CreditlineClient(address) as client:
            client.create_account("acct")
            client.grant_credits("acct", "10", source=grant_pb2.GRANT_SOURCE_PURCHASE)
            for _ in range(20):  # new connections, so both workers are likely to take some
                with CreditlineClient(address) as fresh:
                    fresh.spend_credits("acct", "0.5")
            assert client.get_balance("acct").balance.balance == "0"

        assert supervisor.stop() == 0
        stopped = [r for r in supervisor.records() if r.get("message") == "stopped"]
        assert len(stopped) == 3  # each worker, then the supervisor
        assert stopped[-1]["worker_exit_codes"] == [0, 0]
