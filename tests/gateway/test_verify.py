"""verify(): Stripe's signature scheme, several secrets, the tolerance edge, and safe errors."""

from __future__ import annotations

import json

import pytest
import stripe

from tests.gateway.shapes import OTHER_SECRET, SECRET, sign
from webhook_gateway.verify import (
    InvalidSignature,
    MalformedBody,
    MissingSignature,
    StaleTimestamp,
    VerificationError,
    verify,
)

NOW = 1_793_491_200
BODY = json.dumps({"id": "evt_1", "object": "event", "type": "charge.refunded"}).encode()


def _verify(body: bytes, header: str | None, secrets: tuple[str, ...] = (SECRET,)) -> object:
    return verify(body, header, secrets, 300, now=lambda: NOW)


def test_the_test_signer_signs_like_stripe() -> None:
    expected = stripe.WebhookSignature.generate_signature_header(
        BODY.decode(), SECRET, timestamp=NOW
    )

    assert sign(BODY, SECRET, NOW) == expected


def test_a_signed_body_is_parsed() -> None:
    assert _verify(BODY, sign(BODY, SECRET, NOW)) == json.loads(BODY)


def test_any_configured_secret_is_accepted() -> None:
    header = sign(BODY, OTHER_SECRET, NOW)

    assert _verify(BODY, header, (SECRET, OTHER_SECRET)) == json.loads(BODY)


def test_a_header_with_one_signature_per_secret_is_accepted() -> None:
    # While a secret is rolled, Stripe sends a v1 signature for the old and the new secret.
    old = sign(BODY, OTHER_SECRET, NOW).split(",")[1]
    header = f"{sign(BODY, SECRET, NOW)},{old}"

    assert _verify(BODY, header) == json.loads(BODY)


def test_the_tolerance_edge() -> None:
    assert _verify(BODY, sign(BODY, SECRET, NOW - 300)) == json.loads(BODY)
    with pytest.raises(StaleTimestamp):
        _verify(BODY, sign(BODY, SECRET, NOW - 301))


def test_a_timestamp_ahead_of_the_clock_is_accepted_as_stripe_does() -> None:
    assert _verify(BODY, sign(BODY, SECRET, NOW + 600)) == json.loads(BODY)


def test_a_stale_forgery_is_an_invalid_signature() -> None:
    with pytest.raises(InvalidSignature):
        _verify(BODY, sign(BODY, "whsec_wrong", NOW - 3600))


@pytest.mark.parametrize(
    ("body", "header", "error"),
    [
        (BODY, None, MissingSignature),
        (BODY, "", MissingSignature),
        (BODY, "garbage", InvalidSignature),
        (BODY, "t=notanumber,v1=00", InvalidSignature),
        (BODY, f"t={NOW}", InvalidSignature),
        (BODY, sign(BODY, SECRET, NOW).replace("v1=", "v0="), InvalidSignature),
        (BODY, sign(BODY, "whsec_wrong", NOW), InvalidSignature),
        (BODY + b" ", sign(BODY, SECRET, NOW), InvalidSignature),
        (b"\xff\xfe", sign(b"\xff\xfe", SECRET, NOW), InvalidSignature),
        (b"{not json", sign(b"{not json", SECRET, NOW), MalformedBody),
        (b"[1, 2]", sign(b"[1, 2]", SECRET, NOW), MalformedBody),
    ],
)
def test_refusals(body: bytes, header: str | None, error: type[VerificationError]) -> None:
    with pytest.raises(error) as raised:
        _verify(body, header)

    assert str(raised.value) == error.reason
    # Nothing chained, so a logged traceback cannot show stripe's error, which holds the body.
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__
