"""`creditline serve` with CREDITLINE_METRICS_LISTEN logs where /metrics is and serves it."""

from __future__ import annotations

from pathlib import Path
from urllib.request import urlopen

import pytest
from creditline import CreditlineClient

from tests.e2e.conftest import creditline_env, serving

pytestmark = pytest.mark.e2e


def test_serve_exports_prometheus_metrics(tmp_path: Path) -> None:
    env = creditline_env(f"sqlite:///{tmp_path / 'creditline.db'}", metrics_listen="127.0.0.1:0")
    with serving(env, tmp_path) as server:
        (metrics,) = [r for r in server.records() if r.get("message") == "metrics"]
        with CreditlineClient(server.address) as client:
            client.create_account("acct")
        with urlopen(f"http://{metrics['address']}/metrics", timeout=10) as response:
            text = response.read().decode()
    assert "creditline_rpc_duration_seconds_bucket" in text
    assert 'method="/creditline.v1.CreditService/CreateAccount"' in text
