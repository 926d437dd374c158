"""Hold and PricedRun: reserve -> run -> commit context managers that release when not committed.

Hold holds an amount, or the maximum of an estimate; PricedRun is the estimate-sized hold of one
model run, committed with the usage the run actually consumed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, Self

from creditline.errors import ReservationExpired, ReservationNotActive
from creditline.usage import UsageLike, as_usage, with_tier
from creditline.v1 import credit_service_pb2, pricing_pb2, reservation_pb2

if TYPE_CHECKING:
    from creditline.client import Amount, CreditlineClient

_log = logging.getLogger(__name__)


class Hold:
    """Credits held for a piece of work whose cost is known only afterwards.

    Made by CreditlineClient.hold() and used as a context manager:

        with client.hold("acct", "10") as h:
            cost = do_the_work(h.reservation)
            h.commit(cost)

    Entering reserves the credits: the amount, or the maximum of the estimate, whose price book
    version (and the account's overrides) the server then pins for the commit. commit() settles
    the hold once, at the actual amount or at the price of the actual usage. When the block
    ends without a commit, normally or by an exception, the hold is released. An
    exception from the block always propagates: should the release fail as well, that failure
    is logged and attached to the exception as a note rather than replacing it.
    """

    def __init__(
        self,
        client: CreditlineClient,
        account_id: str,
        amount: str | None,
        *,
        estimate: pricing_pb2.Usage | None,
        overrun_policy: pricing_pb2.OverrunPolicy.ValueType | None,
        ttl: timedelta | None,
        feature: str,
        request_id: str,
        metadata: Mapping[str, str] | None,
        idempotency_key: str,
        timeout: float | None,
    ) -> None:
        """Remember what to reserve; nothing is sent until the hold is entered."""
        self._client = client
        self._account_id = account_id
        self._amount = amount
        self._estimate = estimate
        self._overrun_policy = overrun_policy
        self._ttl = ttl
        self._feature = feature
        self._request_id = request_id
        self._metadata = dict(metadata or {})
        self._key = idempotency_key
        self._timeout = timeout
        self._state: Literal["new", "active", "committed", "released", "ended"] = "new"
        self._reservation: reservation_pb2.Reservation | None = None

    @property
    def idempotency_key(self) -> str:
        """The key of the ReserveCredits call; the commit and release keys derive from it."""
        return self._key

    @property
    def reservation(self) -> reservation_pb2.Reservation:
        """The hold as the server last described it: on reserve, then on commit or release."""
        if self._reservation is None:
            raise RuntimeError("the hold is not placed yet: use it as `with client.hold(...) as h`")
        return self._reservation

    def __enter__(self) -> Self:
        """Reserve the credits (ReserveCredits) and return the hold."""
        if self._state != "new":
            raise RuntimeError("a hold can be entered only once")
        response = self._client.reserve_credits(
            self._account_id,
            self._amount,
            estimate=self._estimate,
            overrun_policy=self._overrun_policy,
            ttl=self._ttl,
            feature=self._feature,
            request_id=self._request_id,
            metadata=self._metadata,
            idempotency_key=self._key,
            timeout=self._timeout,
        )
        self._reservation = response.reservation
        self._state = "active"
        return self

    def commit(
        self, amount: Amount | None = None, *, usage: UsageLike | None = None
    ) -> credit_service_pb2.CommitReservationResponse:
        """Settle the hold at the actual amount or usage (CommitReservation), at most once.

        Give exactly one of amount and usage, else ValueError before anything is sent. Usage is
        priced at the hold's pinned price book version; the answer has its cost and, for an
        estimate-sized hold, the comparison per token class. A second commit, or one after the
        hold was released, is a RuntimeError. When the server says the hold has expired or is no
        longer active, that error is raised and the hold is not released on exit, as there is
        nothing left to release. After OverrunRejected the hold is still active: commit again,
        or let the block release it.
        """
        if self._state != "active":
            raise RuntimeError(f"cannot commit hold {self._describe()}: {_WHY_NOT[self._state]}")
        try:
            response = self._client.commit_reservation(
                self.reservation.reservation_id,
                amount,
                actual_usage=usage,
                idempotency_key=f"{self._key}:commit",
                timeout=self._timeout,
            )
        except (ReservationExpired, ReservationNotActive):
            self._state = "ended"
            raise
        self._reservation = response.reservation
        self._state = "committed"
        return response

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release the hold unless it was committed; never swallow the block's exception."""
        if self._state != "active":
            return
        if exc is None:
            self._release()
            return
        try:
            self._release()
        except Exception as release_error:
            _log.warning("releasing hold %s failed: %s", self._describe(), release_error)
            exc.add_note(f"Releasing hold {self._describe()} also failed: {release_error}")

    def _release(self) -> None:
        """Release the hold (ReleaseReservation) under the key derived from the reserve key."""
        response = self._client.release_reservation(
            self.reservation.reservation_id,
            idempotency_key=f"{self._key}:release",
            timeout=self._timeout,
        )
        self._reservation = response.reservation
        self._state = "released"

    def _describe(self) -> str:
        """The hold's reservation id, or its idempotency key before it is placed."""
        if self._reservation is not None:
            return self._reservation.reservation_id
        return f"with key {self._key!r}"


class PricedRun:
    """One model run paid from an estimate-sized hold: reserve the estimate, commit the usage.

    Made by CreditlineClient.priced_run() and used as a context manager:

        from creditline.usage import line

        planned = line("openai", "gpt-4o", input_tokens=1200, max_output_tokens=800)
        with client.priced_run("acct", planned, tier="TIER_1A") as run:
            print(run.estimate.maximum_credits, run.reservation.amount)
            reply = call_the_model()
            run.commit(line("openai", "gpt-4o", input_tokens=1200, output_tokens=512))
        print(run.commit_response.actual_cost.total_credits, run.commit_response.comparisons)

    Entering holds the estimate's maximum, priced by the server, which pins the price book
    version and the account's overrides for the commit. commit() settles the hold at the price
    of the actual usage, charging the run's tier again unless the actual usage names its own.
    Everything else is Hold's: at most one commit, and a release when the block ends without
    one, normally or by an exception, which always propagates.
    """

    def __init__(self, hold: Hold, *, tier: str, tier_quantity: int) -> None:
        """Wrap an estimate-sized hold; tier and tier_quantity are folded into the commit."""
        self._hold = hold
        self._tier = tier
        self._tier_quantity = tier_quantity
        self._commit_response: credit_service_pb2.CommitReservationResponse | None = None

    @property
    def idempotency_key(self) -> str:
        """The key of the ReserveCredits call; the commit and release keys derive from it."""
        return self._hold.idempotency_key

    @property
    def reservation(self) -> reservation_pb2.Reservation:
        """The hold as the server last described it: on reserve, then on commit or release."""
        return self._hold.reservation

    @property
    def estimate(self) -> pricing_pb2.CostEstimate:
        """The server's itemized estimate the hold was sized from (its maximum_credits)."""
        return self.reservation.estimate

    @property
    def commit_response(self) -> credit_service_pb2.CommitReservationResponse:
        """The commit's answer: actual_cost, comparisons and what was charged."""
        if self._commit_response is None:
            raise RuntimeError("the run is not committed: call run.commit(actual_usage) first")
        return self._commit_response

    def __enter__(self) -> Self:
        """Hold the estimate's maximum (ReserveCredits) and return the run."""
        self._hold.__enter__()
        return self

    def commit(self, actual_usage: UsageLike) -> credit_service_pb2.CommitReservationResponse:
        """Settle the hold at the price of the usage the run consumed (CommitReservation)."""
        actual = as_usage(actual_usage, "actual_usage")
        if self._tier and not actual.tier:
            actual = with_tier(actual, self._tier, self._tier_quantity)
        self._commit_response = self._hold.commit(usage=actual)
        return self._commit_response

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release the hold unless it was committed; never swallow the block's exception."""
        self._hold.__exit__(exc_type, exc, traceback)


_WHY_NOT: Final = {
    "new": "it is not placed yet; enter it with `with client.hold(...) as h` first",
    "committed": "it is committed already",
    "released": "it is released already",
    "ended": "the server reported it expired or no longer active",
}
