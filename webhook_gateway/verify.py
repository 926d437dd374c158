"""The Stripe-Signature check: a webhook body is trusted only once this module has verified it.

Stripe signs "{t}.{raw body}" with HMAC-SHA256 under the endpoint's signing secret and sends
"t=<unix time>,v1=<hex>[,v1=<hex>…]" in the Stripe-Signature header. The signature is checked on
the exact bytes received, with stripe-python's own WebhookSignature.verify_header, against each
configured secret in turn (several are configured while a secret is being rolled), and only then
is the body parsed. The timestamp check is done here rather than by verify_header so that a stale
delivery is told apart from a forged one.

The exceptions carry a fixed, short reason for the response and the log. They never carry the
secret, the header or the body: stripe's SignatureVerificationError holds the body, so it is
caught here and never chained.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import stripe

SIGNATURE_HEADER = "Stripe-Signature"


class VerificationError(Exception):
    """The request is not a verified Stripe event; `reason` says why in a few safe words."""

    reason: ClassVar[str] = "unverified request"

    def __init__(self) -> None:
        super().__init__(self.reason)


class MissingSignature(VerificationError):
    """The request has no Stripe-Signature header."""

    reason = "missing signature"


class InvalidSignature(VerificationError):
    """The header is garbled, or no v1 signature in it matches any configured secret."""

    reason = "invalid signature"


class StaleTimestamp(VerificationError):
    """The signature matches, but its timestamp is older than the tolerance (a replay)."""

    reason = "stale timestamp"


class MalformedBody(VerificationError):
    """The body is correctly signed but is not a JSON object."""

    reason = "malformed body"


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int,
    *,
    now: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Return the event the body holds, once its signature and timestamp are verified.

    A signature matching any of `secrets` is accepted. A timestamp more than `tolerance` seconds
    before now() is refused, as Stripe's own libraries do (a timestamp ahead of the clock is not).
    """
    if not header:
        raise MissingSignature
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        # Stripe signs the UTF-8 text of a JSON body; anything else cannot carry its signature.
        raise InvalidSignature from None
    timestamp = _timestamp(header)
    if not any(_signed_with(text, header, secret) for secret in secrets):
        raise InvalidSignature
    if timestamp < now() - tolerance:
        raise StaleTimestamp
    try:
        event = json.loads(text)
    except ValueError:
        raise MalformedBody from None
    if not isinstance(event, dict):
        raise MalformedBody
    return event


def _timestamp(header: str) -> int:
    """The header's t= value, read the way stripe-python reads it (the first t= item)."""
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                raise InvalidSignature from None
    raise InvalidSignature


def _signed_with(text: str, header: str, secret: str) -> bool:
    """Whether one of the header's v1 signatures is the body's signature under secret."""
    try:
        # tolerance=None: the signature alone; the timestamp is judged by verify().
        stripe.WebhookSignature.verify_header(text, header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return False
    return True
