"""`gateway_main` as a real process: the listening line, answers, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway import shapes
from tests.gateway.shapes import SECRET, sign

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = "import sys; from webhook_gateway.app import gateway_main; sys.exit(gateway_main())"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _environment(**variables: str) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("STRIPE_", "CREDITLINE_GATEWAY_"))
    }
    return {**environment, **variables}


@pytest.fixture
def gateway() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A gateway process on a free port whose Creditline server is unreachable, and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH],
        cwd=ROOT,
        env=_environment(
            STRIPE_WEBHOOK_SECRET=SECRET,
            CREDITLINE_GATEWAY_LISTEN="127.0.0.1:0",
            CREDITLINE_GATEWAY_TARGET=f"127.0.0.1:{_closed_port()}",
            CREDITLINE_GATEWAY_RPC_TIMEOUT_SECONDS="2",
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:
            if "gateway listening on " in line:
                address = line.rsplit("gateway listening on ", 1)[1].strip()
                break
        else:
            pytest.fail(f"the gateway exited with {process.wait()} before listening")
        yield process, f"http://{address}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def _request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310 - local
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local
            status: int = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status


def test_serves_until_sigterm_then_exits_cleanly(
    gateway: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = gateway
    body = shapes.encode(shapes.event("charge.refunded", shapes.charge()))

    assert _request(f"{url}/healthz") == 200
    assert _request(f"{url}/stripe/webhook", body, {"Stripe-Signature": sign(body, SECRET)}) == 503
    assert _request(f"{url}/stripe/webhook", body, {"Stripe-Signature": "t=1,v1=0"}) == 400

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=30) == 0


def test_refuses_to_start_without_a_webhook_secret() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
