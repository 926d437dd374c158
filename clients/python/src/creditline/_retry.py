"""Retrying a call that failed for a passing reason: UNAVAILABLE or DEADLINE_EXCEEDED.

Only those two are retried, because only they say nothing about the request itself. Retrying a
mutation is safe because the caller sends the same idempotency key on every attempt: the server
answers a repeat of a call that did take effect with its stored response. Every other error is
raised at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from creditline.errors import DeadlineExceeded, Unavailable

_T = TypeVar("_T")

RETRYABLE: Final = (Unavailable, DeadlineExceeded)
"""The errors worth another attempt."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try a call and how long to wait between attempts.

    The wait before retry n (1-based) is drawn uniformly from zero up to
    min(max_backoff, initial_backoff * multiplier ** (n - 1)): exponential growth, capped, with
    full jitter so that clients failing together do not retry together.
    """

    max_attempts: int
    initial_backoff: float
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        """Refuse a policy that could never make a call or would wait a negative time."""
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff must not be negative")

    def delay(self, retry: int) -> float:
        """The seconds to wait before the given retry, the first retry being 1."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return random.uniform(0, ceiling)


def call_with_retry(
    attempt: Callable[[], _T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Run attempt until it succeeds, fails for good, or policy.max_attempts are spent.

    The last retryable error is raised when the attempts run out.
    """
    failures = 0
    while True:
        try:
            return attempt()
        except RETRYABLE:
            failures += 1
            if failures >= policy.max_attempts:
                raise
        wait = policy.delay(failures)
        if wait > 0:
            sleep(wait)
