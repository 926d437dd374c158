"""Pytest fixtures for the fake Stripe server, for a conftest to import.

This module owns `fake_stripe` (a fresh `FakeStripe` per test that fails the test at teardown
when a request broke Stripe's API description) and `stripe_client` (a `stripe.StripeClient`
pointed at it). Import both names into a conftest:
`from tests.fakes.fixtures import fake_stripe, stripe_client`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from tests.fakes.stripe_server import FakeStripe


def fail_on_violations(fake: FakeStripe) -> None:
    """Fail the running test when the fake recorded requests Stripe would have refused."""
    violations = fake.take_violations()
    if violations:
        listed = "\n".join(f"  - {violation}" for violation in violations)
        pytest.fail(f"requests that Stripe would refuse reached the fake:\n{listed}")


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    """A running fake Stripe; the test fails at teardown if it received a bad request."""
    with FakeStripe() as fake:
        yield fake
        fail_on_violations(fake)


@pytest.fixture
def stripe_client(fake_stripe: FakeStripe) -> stripe.StripeClient:
    """The official client pointed at `fake_stripe`, without network retries."""
    return fake_stripe.client()
