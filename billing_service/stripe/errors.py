"""How Stripe's errors become domain errors, so callers above this package never see a stripe
exception:

    stripe.AuthenticationError               -> FailedPrecondition STRIPE_AUTHENTICATION_FAILED
    stripe.APIConnectionError, RateLimitError,
    stripe.APIError and any other 5xx        -> StripeUnavailable (retry with the same key)
    stripe.InvalidRequestError and other 4xx -> FailedPrecondition STRIPE_REQUEST_REJECTED

No message ever carries the secret key: Stripe's own text is passed on only for requests it
refused (where it describes the request), and any key-shaped token in it is masked anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import stripe

from billing_service.domain.errors import DomainError, FailedPrecondition, StripeUnavailable

# Secret and restricted keys, live or test, in case Stripe's text ever echoes one back.
_KEY = re.compile(r"\b([sr]k)_(live|test)_[A-Za-z0-9*]+")
_MAX_MESSAGE = 300


def domain_error(error: stripe.StripeError, doing: str) -> DomainError:
    """The domain error for a Stripe failure met while `doing` (e.g. "creating a customer")."""
    status = error.http_status
    if isinstance(error, stripe.AuthenticationError):
        return FailedPrecondition(
            f"Stripe refused the API key while {doing}: check STRIPE_SECRET_KEY",
            reason="STRIPE_AUTHENTICATION_FAILED",
            setting="STRIPE_SECRET_KEY",
        )
    if isinstance(error, stripe.APIConnectionError):
        return StripeUnavailable(f"Stripe could not be reached while {doing}")
    if isinstance(error, stripe.RateLimitError):
        return StripeUnavailable(f"Stripe is rate limiting requests ({doing})")
    if isinstance(error, stripe.APIError) or status is None or status >= 500:
        shown = f" (HTTP {status})" if status is not None else ""
        return StripeUnavailable(f"Stripe failed while {doing}{shown}")
    metadata = {"stripe_status": str(status)}
    if error.code:
        metadata["stripe_code"] = error.code
    if error.request_id:
        metadata["stripe_request_id"] = error.request_id
    return FailedPrecondition(
        f"Stripe refused the request: {_short(error)}",
        reason="STRIPE_REQUEST_REJECTED",
        **metadata,
    )


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Raise the domain error for any Stripe failure inside the block."""
    try:
        yield
    except stripe.StripeError as error:
        raise domain_error(error, doing) from error


def is_missing(error: stripe.StripeError) -> bool:
    """Whether Stripe answered that the object asked for does not exist."""
    return isinstance(error, stripe.InvalidRequestError) and error.http_status == 404


def _short(error: stripe.StripeError) -> str:
    text = error.user_message or type(error).__name__
    text = _KEY.sub(lambda match: f"{match[1]}_{match[2]}_…", str(text))
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
