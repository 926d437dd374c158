"""Buying credits end to end with real processes: `creditline catalog push`, `creditline serve`
and `creditline gateway`, the official stripe package talking to the fake Stripe server, and
webhooks signed exactly as Stripe signs them.

- A package bought through CreateCheckoutSession and a signed `checkout.session.completed`
  raises the balance by exactly the package; delivered again it changes nothing; a bad
  signature, an old timestamp or a broken body is answered 400 and changes nothing.
- `catalog push` a second time sends Stripe no write at all.
- While the server is down the gateway answers 5xx, so Stripe retries; the redelivery after
  recovery applies the event once.
- `creditline stripe reconcile` applies an event the gateway never saw, once.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from creditline import CreditlineClient

from tests.e2e.conftest import (
    ServerProcess,
    creditline_env,
    fresh_postgres_database,
    run_creditline,
    serving,
)
from tests.fakes import stripe_events
from tests.fakes.fixtures import fail_on_violations
from tests.fakes.stripe_server import FakeStripe

pytestmark = pytest.mark.e2e

SECRET = "whsec_e2e_test_secret"
OK_URL, CANCEL_URL = "https://app.example/paid", "https://app.example/cancel"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Stack:
    """The fake Stripe, the server, the gateway and what they need to be restarted."""

    fake: FakeStripe
    env: dict[str, str]
    workdir: Path
    server: ServerProcess
    gateway: ServerProcess
    address: str
    webhook_url: str

    def client(self) -> CreditlineClient:
        return CreditlineClient(self.address, backoff=0, timeout=10)


def _gateway(env: dict[str, str], workdir: Path, target: str) -> ServerProcess:
    gateway_env = {
        **env,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "CREDITLINE_GATEWAY_LISTEN": "127.0.0.1:0",
        "CREDITLINE_GATEWAY_TARGET": target,
        "CREDITLINE_GATEWAY_RPC_TIMEOUT_SECONDS": "3",
    }
    process = ServerProcess(["gateway"], gateway_env, workdir)
    process.wait_for_line("gateway listening on ")
    return process


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Stripe (fake), the catalog pushed to it, a server on a fixed port, and a gateway."""
    workdir = tmp_path_factory.mktemp(f"stripe-{request.param}")
    with FakeStripe() as fake:
        if request.param == "sqlite":
            url_context: Any = _nullcontext(f"sqlite:///{workdir / 'creditline.db'}")
        else:
            url_context = fresh_postgres_database()
        with url_context as url:
            env = creditline_env(
                url,
                listen=f"127.0.0.1:{_free_port()}",
                sweep_interval_seconds="3600",
            )
            env.update(STRIPE_SECRET_KEY=fake.api_key, STRIPE_API_BASE=fake.base_url)
            if request.param == "postgresql":
                migrated = run_creditline(["migrate"], env, workdir)
                assert migrated.returncode == 0, migrated.stderr
            pushed = run_creditline(["catalog", "push"], env, workdir)
            assert pushed.returncode == 0, pushed.stderr
            assert "11 created, 0 updated, 0 unchanged" in pushed.stdout
            with serving(env, workdir) as server:
                address = server.address
                gateway = _gateway(env, workdir, address)
                line = gateway.wait_for_line("gateway listening on ")
                webhook = f"http://{line.rsplit('gateway listening on ', 1)[1].strip()}"
                built = Stack(fake, env, workdir, server, gateway, address, webhook)
                try:
                    yield built
                finally:
                    gateway.stop()
                    if built.server is not server:  # restarted by a test
                        assert built.server.stop() == 0
        fail_on_violations(fake)


class _nullcontext:  # noqa: N801 - reads like contextlib.nullcontext, typed for a str
    def __init__(self, value: str) -> None:
        self.value = value

    def __enter__(self) -> str:
        return self.value

    def __exit__(self, *_exc: object) -> None:
        return None


def post(url: str, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
    """POST a webhook; the status and JSON answer."""
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    request = urllib.request.Request(url + "/stripe/webhook", data=body, headers=headers)  # noqa: S310 - local
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - local
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def signed(
    event: dict[str, Any], *, at: int | None = None, secret: str = SECRET
) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    return body, stripe_events.sign(body, secret, at if at is not None else int(time.time()))


def completed_event(fake: FakeStripe, session_id: str, *, payment_intent: str) -> dict[str, Any]:
    """checkout.session.completed for a session the server created at the fake, paid."""
    session = fake.object(session_id)
    return stripe_events.event(
        "checkout.session.completed",
        stripe_events.checkout_session(
            session_id=session_id,
            customer=session["customer"],
            metadata=session["metadata"],
            client_reference_id=session.get("client_reference_id"),
            amount_total=session["amount_total"],
            payment_intent=payment_intent,
        ),
    )


def balance(stack: Stack, account_id: str) -> tuple[Decimal, int]:
    with stack.client() as client:
        view = client.get_balance(account_id).balance
        entries = client.list_ledger_entries(account_id, page_size=1000).ledger_entries
    return Decimal(view.balance), len(entries)


def buy(stack: Stack, account_id: str, package_id: str) -> str:
    with stack.client() as client:
        client.create_account(account_id)
        checkout = client.create_checkout_session(
            account_id, package_id=package_id, success_url=OK_URL, cancel_url=CANCEL_URL
        )
    assert checkout.url.startswith("https://checkout.stripe.com/")
    session = stack.fake.object(checkout.session_id)
    assert session["mode"] == "payment" and session["customer"] == checkout.stripe_customer_id
    assert session["metadata"]["account_id"] == account_id
    return checkout.session_id


def test_a_pack_purchase_grants_exactly_the_pack_once(stack: Stack) -> None:
    session_id = buy(stack, "e2e-buyer", "pack_500")
    event = completed_event(stack.fake, session_id, payment_intent="pi_e2e_1")
    body, signature = signed(event)

    assert post(stack.webhook_url, body, signature) == (200, {"status": "applied"})
    assert balance(stack, "e2e-buyer") == (Decimal(500), 1)

    assert post(stack.webhook_url, body, signature)[0] == 200  # Stripe delivers again
    assert balance(stack, "e2e-buyer") == (Decimal(500), 1)


def test_bad_webhooks_are_400_and_change_nothing(stack: Stack) -> None:
    session_id = buy(stack, "e2e-refused", "pack_100")
    event = completed_event(stack.fake, session_id, payment_intent="pi_e2e_2")
    body, signature = signed(event)
    _, forged = signed(event, secret="whsec_not_ours")
    _, stale = signed(event, at=int(time.time()) - 301)
    broken = body[:-5]
    cases = {
        "bad signature": (body, forged),
        "old timestamp": (body, stale),
        "no signature": (body, None),
        "tampered body": (body.replace(b"pack_100", b"pack_2000"), signature),
        "broken body": (broken, stripe_events.sign(broken, SECRET, int(time.time()))),
    }
    for name, (payload, header) in cases.items():
        status, _ = post(stack.webhook_url, payload, header)
        assert status == 400, name
    assert balance(stack, "e2e-refused") == (Decimal(0), 0)


def test_catalog_push_twice_writes_nothing_to_stripe(stack: Stack) -> None:
    before = len(stack.fake.requests)
    again = run_creditline(["catalog", "push"], stack.env, stack.workdir)
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 updated, 11 unchanged" in again.stdout
    writes = [r for r in stack.fake.requests[before:] if r.method == "POST"]
    assert writes == []
    with stack.client() as client:
        prices = {p.plan_id: p.stripe_price_id for p in client.list_plans().plans}
    stripe_prices = {p["lookup_key"]: p["id"] for p in stack.fake.objects("price") if p["active"]}
    assert prices["pro_monthly"] == stripe_prices["creditline_pro_monthly"]
    assert stack.fake.object(prices["pro_monthly"])["metadata"]["includedCredits"] == "400"


def test_reconcile_applies_a_missed_event_once(stack: Stack) -> None:
    session_id = buy(stack, "e2e-missed", "pack_100")
    since = datetime.now(UTC) - timedelta(minutes=1)
    stack.fake.add_event(completed_event(stack.fake, session_id, payment_intent="pi_e2e_3"))
    args = ["stripe", "reconcile", "--since", since.isoformat(), "--target", stack.address]
    for _ in range(2):
        run = run_creditline(args, stack.env, stack.workdir)
        assert run.returncode == 0, run.stdout + run.stderr
        assert balance(stack, "e2e-missed") == (Decimal(100), 1)


def test_while_the_server_is_down_the_gateway_asks_stripe_to_retry(stack: Stack) -> None:
    session_id = buy(stack, "e2e-down", "pack_2000")
    body, signature = signed(completed_event(stack.fake, session_id, payment_intent="pi_e2e_4"))
    assert stack.server.stop() == 0
    try:
        status, _ = post(stack.webhook_url, body, signature)
        assert status == 503
    finally:
        restarted = ServerProcess(["serve"], stack.env, stack.workdir)
        restarted.wait_for_log(lambda r: r.get("message") == "serving")
        stack.server = restarted
    assert restarted.address == stack.address  # the fixed port, which the gateway targets
    assert post(stack.webhook_url, body, signature) == (200, {"status": "applied"})
    assert post(stack.webhook_url, body, signature)[0] == 200
    assert balance(stack, "e2e-down") == (Decimal(2000), 1)
