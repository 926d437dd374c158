"""The typed synchronous client for CreditService and BillingService: one method per RPC.

CreditlineClient owns the channel, the bearer token, the per-attempt deadline and the retry
policy; each of its methods builds one request from keyword arguments, calls the RPC and returns
the response message. Three rules hold for every method:

- Money never passes through float: amounts (and prices, markups, discounts) are Decimal, str
  or int, sent as the canonical decimal string the server expects ("12.5", never "12.50").
- A mutating method sends one idempotency key on every attempt of one call, generated when the
  caller gives none, so retrying UNAVAILABLE or DEADLINE_EXCEEDED can never apply it twice.
- Every failure is raised as a creditline.errors exception, never as a bare grpc.RpcError.

Both services share the channel, the token, the deadline and the retry policy. Usage (for
estimates, estimate-sized holds and usage-priced commits) is any creditline.usage.UsageLike.

Hold wraps ReserveCredits, CommitReservation and ReleaseReservation in a context manager, so a
hold is released whenever the work it paid for does not commit it; PricedRun does the same for
one model run held at its estimate and committed with its actual usage.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Final, Self, TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from creditline._retry import RetryPolicy, call_with_retry
from creditline.errors import from_grpc_error
from creditline.hold import Hold, PricedRun
from creditline.usage import UsageLike, as_usage, with_tier
from creditline.v1 import (
    account_pb2,
    billing_service_pb2,
    billing_service_pb2_grpc,
    credit_service_pb2,
    credit_service_pb2_grpc,
    grant_pb2,
    ledger_pb2,
    pricing_pb2,
    reservation_pb2,
    stripe_event_pb2,
    subscription_pb2,
)

Amount: TypeAlias = Decimal | str | int
"""A credit amount as the client accepts it; float is refused because it cannot be exact."""

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)
_Item = TypeVar("_Item")


class _Unset(enum.Enum):
    """The type of UNSET, which tells update_account that a field was not given."""

    UNSET = enum.auto()


UNSET: Final = _Unset.UNSET
"""The default of update_account's fields: leave the field as it is."""


class CreditlineClient:
    """A synchronous client for Creditline's CreditService and BillingService.

    Use it as a context manager, or call close() when done. Every call sends
    ("authorization", "Bearer <token>") when a token is given, gives each attempt `timeout`
    seconds unless the call passes its own, and makes up to `max_attempts` attempts when the
    server is UNAVAILABLE or the deadline passes, waiting an exponentially growing, jittered
    pause from `backoff` seconds up to two seconds between them. The client closes the channel
    it opened but never one passed in as `channel`, whose credentials and options are then the
    caller's (and `target` only names it). One client may be shared between threads.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff: float = 0.05,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        """Open a channel to target, or use the given one, and set the call defaults.

        With wait_for_ready a call made while the server is unreachable waits (up to its
        deadline) for the connection instead of failing at once with UNAVAILABLE: for callers
        that would rather wait for a restarting server than report it down.
        """
        if channel is not None and credentials is not None:
            raise ValueError("pass credentials or a ready channel, not both")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.target = target
        self._timeout = timeout
        self._retry = RetryPolicy(max_attempts=max_attempts, initial_backoff=backoff)
        self._call_metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
        self._wait_for_ready = wait_for_ready
        self._owns_channel = channel is None
        if channel is None:
            channel = (
                grpc.secure_channel(target, credentials)
                if credentials is not None
                else grpc.insecure_channel(target)
            )
        self._channel = channel
        self._stub = credit_service_pb2_grpc.CreditServiceStub(channel)
        self._billing = billing_service_pb2_grpc.BillingServiceStub(channel)

    def close(self) -> None:
        """Close the channel if the client opened it; calls made afterwards fail."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        """Return the client itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the client."""
        self.close()

    # Accounts.

    def get_account(
        self, account_id: str, *, timeout: float | None = None
    ) -> credit_service_pb2.GetAccountResponse:
        """Get one account (GetAccount)."""
        request = credit_service_pb2.GetAccountRequest(account_id=account_id)
        return self._invoke(self._stub.GetAccount, request, timeout)

    def list_accounts(
        self,
        *,
        parent_account_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> credit_service_pb2.ListAccountsResponse:
        """List one page of accounts in id order, optionally only one parent's (ListAccounts)."""
        request = credit_service_pb2.ListAccountsRequest(
            parent_account_id=parent_account_id, page_size=page_size, page_token=page_token
        )
        return self._invoke(self._stub.ListAccounts, request, timeout)

    def iter_accounts(
        self,
        *,
        parent_account_id: str = "",
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[account_pb2.Account]:
        """Yield every account, fetching pages as they are needed."""

        def fetch(token: str) -> tuple[Iterable[account_pb2.Account], str]:
            page = self.list_accounts(
                parent_account_id=parent_account_id,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            return page.accounts, page.next_page_token

        return _follow_pages(fetch)

    def create_account(
        self,
        account_id: str,
        *,
        billing_mode: account_pb2.BillingMode.ValueType = account_pb2.BILLING_MODE_PREPAID,
        stripe_customer_id: str = "",
        parent_account_id: str = "",
        low_balance_threshold: Amount | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> credit_service_pb2.CreateAccountResponse:
        """Create an account under the caller's own id (CreateAccount)."""
        account = account_pb2.Account(
            account_id=account_id,
            billing_mode=billing_mode,
            stripe_customer_id=stripe_customer_id,
            parent_account_id=parent_account_id,
            low_balance_threshold=_optional_amount(low_balance_threshold, "low_balance_threshold"),
            metadata=metadata,
        )
        request = credit_service_pb2.CreateAccountRequest(
            account=account, idempotency_key=_key(idempotency_key)
        )
        return self._invoke(self._stub.CreateAccount, request, timeout)

    def update_account(
        self,
        account_id: str,
        *,
        billing_mode: account_pb2.BillingMode.ValueType | _Unset = UNSET,
        stripe_customer_id: str | _Unset = UNSET,
        parent_account_id: str | _Unset = UNSET,
        low_balance_threshold: Amount | _Unset | None = UNSET,
        metadata: Mapping[str, str] | _Unset = UNSET,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> credit_service_pb2.UpdateAccountResponse:
        """Change the given fields of an account, and only those (UpdateAccount).

        The update_mask names exactly the fields passed: "" clears a string, None clears the
        low-balance threshold and {} clears the metadata. Passing no field is a ValueError,
        raised before anything is sent.
        """
        account = account_pb2.Account(account_id=account_id)
        paths: list[str] = []
        if not isinstance(billing_mode, _Unset):
            account.billing_mode = billing_mode
            paths.append("billing_mode")
        if not isinstance(stripe_customer_id, _Unset):
            account.stripe_customer_id = stripe_customer_id
            paths.append("stripe_customer_id")
        if not isinstance(parent_account_id, _Unset):
            account.parent_account_id = parent_account_id
            paths.append("parent_account_id")
        if not isinstance(low_balance_threshold, _Unset):
            account.low_balance_threshold = _optional_amount(
                low_balance_threshold, "low_balance_threshold"
            )
            paths.append("low_balance_threshold")
        if not isinstance(metadata, _Unset):
            account.metadata.update(metadata)
            paths.append("metadata")
        if not paths:
            raise ValueError("update_account needs at least one field to change")
        request = credit_service_pb2.UpdateAccountRequest(
            account=account,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            idempotency_key=_key(idempotency_key),
        )
        return self._invoke(self._stub.UpdateAccount, request, timeout)

    # Grants.

    def grant_credits(
        self,
        account_id: str,
        amount: Amount,
        *,
        source: grant_pb2.GrantSource.ValueType,
        priority: int | None = None,
        effective_time: datetime | None = None,
        expire_time: datetime | None = None,
        description: str = "",
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> credit_service_pb2.GrantCreditsResponse:
        """Grant credits into a new bucket (GrantCredits).

        The times must be timezone-aware; a grant effective in the future stays pending until
        then, and one without expire_time never expires.
        """
        request = credit_service_pb2.GrantCreditsRequest(
            account_id=account_id,
            amount=_amount(amount),
            source=source,
            priority=priority,
            effective_time=_timestamp(effective_time, "effective_time"),
            expire_time=_timestamp(expire_time, "expire_time"),
            description=description,
            metadata=metadata,
            idempotency_key=_key(idempotency_key),
        )
        return self._invoke(self._stub.GrantCredits, request, timeout)

    def list_grants(
        self,
        account_id: str,
        *,
        statuses: Iterable[grant_pb2.GrantStatus.ValueType] = (),
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> credit_service_pb2.ListGrantsResponse:
        """List one page of an account's grants, newest first (ListGrants)."""
        request = credit_service_pb2.ListGrantsRequest(
            account_id=account_id, statuses=statuses, page_size=page_size, page_token=page_token
        )
        return self._invoke(self._stub.ListGrants, request, timeout)

    def iter_grants(
        self,
        account_id: str,
        *,
        statuses: Iterable[grant_pb2.GrantStatus.ValueType] = (),
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[grant_pb2.Grant]:
        """Yield every grant of an account, newest first, fetching pages as they are needed."""
        statuses = tuple(statuses)  # A one-shot iterable must serve every page.

        def fetch(token: str) -> tuple[Iterable[grant_pb2.Grant], str]:
            page = self.list_grants(
                account_id,
                statuses=statuses,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            return page.grants, page.next_page_token

        return _follow_pages(fetch)

    def void_grant(
        self,
        grant_id: str,
        *,
        reason: str = "",
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> credit_service_pb2.VoidGrantResponse:
        """Void a grant's unspent, unheld remainder (VoidGrant)."""
        request = credit_service_pb2.VoidGrantRequest(
            grant_id=grant_id, reason=reason, idempotency_key=_key(idempotency_key)
        )
        return self._invoke(self._stub.VoidGrant, request, timeout)

    # Spending and holds.

    def spend_credits(
        self,
        account_id: str,
        amount: Amount,
        *,
        feature: str = "",
        request_id: str = "",
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> credit_service_pb2.SpendCreditsResponse:
        """Spend credits at once (SpendCredits); InsufficientCredits when they do not suffice."""
        request = credit_service_pb2.SpendCreditsRequest(
            account_id=account_id,
            amount=_amount(amount),
            feature=feature,
            request_id=request_id,
            metadata=metadata,
            idempotency_key=_key(idempotency_key),
        )
        return self._invoke(self._stub.SpendCredits, request, timeout)

    def reserve_credits(
        self,
        account_id: str,
        amount: Amount | None = None,
        *,
        estimate: UsageLike | None = None,
        overrun_policy: pricing_pb2.OverrunPolicy.ValueType | None = None,
        ttl: timedelta | None = None,
        feature: str = "",
        request_id: str = "",
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> credit_service_pb2.ReserveCreditsResponse:
        """Hold credits for ttl, or the server's default (ReserveCredits); see also hold().

        Give exactly one of amount and estimate, else ValueError before anything is sent. For
        an estimate the server holds its maximum and pins the price book version for the
        commit. overrun_policy decides what a commit above the hold does (the server's
        ALLOW_FROM_BALANCE when None).
        """
        _exactly_one(amount, estimate, "amount", "estimate")
        request = credit_service_pb2.ReserveCreditsRequest(
            account_id=account_id,
            amount=_optional_amount(amount, "amount"),
            estimate=None if estimate is None else as_usage(estimate, "estimate"),
            overrun_policy=_overrun_policy(overrun_policy),
            ttl=_duration(ttl),
            feature=feature,
            request_id=request_id,
            metadata=metadata,
            idempotency_key=_key(idempotency_key),
        )
        return self._invoke(self._stub.ReserveCredits, request, timeout)

    def commit_reservation(
        self,
        reservation_id: str,
        amount: Amount | None = None,
        *,
        actual_usage: UsageLike | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> credit_service_pb2.CommitReservationResponse:
        """Settle a hold at the actual amount or usage, releasing the rest (CommitReservation).

        Give exactly one of amount and actual_usage, else ValueError before anything is sent.
        Usage is priced at the hold's pinned price book version; the answer then carries its
        actual_cost and, for an estimate-sized hold, the comparisons per token class. Above the
        hold, its overrun policy decides; REJECT raises OverrunRejected.
        """
        _exactly_one(amount, actual_usage, "amount", "actual_usage")
        request = credit_service_pb2.CommitReservationRequest(
            reservation_id=reservation_id,
            amount=_optional_amount(amount, "amount"),
            actual_usage=None if actual_usage is None else as_usage(actual_usage, "actual_usage"),
            idempotency_key=_key(idempotency_key),
        )
        return self._invoke(self._stub.CommitReservation, request, timeout)

    def release_reservation(
        self,
        reservation_id: str,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> credit_service_pb2.ReleaseReservationResponse:
        """Release a hold without spending (ReleaseReservation)."""
        request = credit_service_pb2.ReleaseReservationRequest(
            reservation_id=reservation_id, idempotency_key=_key(idempotency_key)
        )
        return self._invoke(self._stub.ReleaseReservation, request, timeout)

    def get_reservation(
        self, reservation_id: str, *, timeout: float | None = None
    ) -> credit_service_pb2.GetReservationResponse:
        """Get one hold (GetReservation)."""
        request = credit_service_pb2.GetReservationRequest(reservation_id=reservation_id)
        return self._invoke(self._stub.GetReservation, request, timeout)

    def list_reservations(
        self,
        account_id: str,
        *,
        statuses: Iterable[reservation_pb2.ReservationStatus.ValueType] = (),
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> credit_service_pb2.ListReservationsResponse:
        """List one page of an account's holds, newest first (ListReservations)."""
        request = credit_service_pb2.ListReservationsRequest(
            account_id=account_id, statuses=statuses, page_size=page_size, page_token=page_token
        )
        return self._invoke(self._stub.ListReservations, request, timeout)

    def iter_reservations(
        self,
        account_id: str,
        *,
        statuses: Iterable[reservation_pb2.ReservationStatus.ValueType] = (),
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[reservation_pb2.Reservation]:
        """Yield every hold of an account, newest first, fetching pages as they are needed."""
        statuses = tuple(statuses)  # A one-shot iterable must serve every page.

        def fetch(token: str) -> tuple[Iterable[reservation_pb2.Reservation], str]:
            page = self.list_reservations(
                account_id,
                statuses=statuses,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            return page.reservations, page.next_page_token

        return _follow_pages(fetch)

    def hold(
        self,
        account_id: str,
        amount: Amount | None = None,
        *,
        estimate: UsageLike | None = None,
        overrun_policy: pricing_pb2.OverrunPolicy.ValueType | None = None,
        ttl: timedelta | None = None,
        feature: str = "",
        request_id: str = "",
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Hold:
        """A hold to use in a with block: reserved on entry, released unless committed.

        Give exactly one of amount and estimate (held at its maximum). Both are checked here,
        so a float or a missing amount fails before anything is sent. The commit and release
        keys are derived from the reserve key (key + ":commit", key + ":release"), so the whole
        hold can be replayed safely under one caller-chosen key.
        """
        _exactly_one(amount, estimate, "amount", "estimate")
        return Hold(
            self,
            account_id,
            None if amount is None else _amount(amount),
            estimate=None if estimate is None else as_usage(estimate, "estimate"),
            overrun_policy=overrun_policy,
            ttl=ttl,
            feature=feature,
            request_id=request_id,
            metadata=metadata,
            idempotency_key=_key(idempotency_key),
            timeout=timeout,
        )

    def priced_run(
        self,
        account_id: str,
        estimate: UsageLike,
        *,
        tier: str = "",
        tier_quantity: int = 0,
        overrun_policy: pricing_pb2.OverrunPolicy.ValueType | None = None,
        ttl: timedelta | None = None,
        feature: str = "",
        request_id: str = "",
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> PricedRun:
        """A model run in a with block: held at the estimate's maximum, committed with usage.

        tier and tier_quantity add a tier's base fee to the estimate, and again to the actual
        usage at commit unless that names its own tier; usage that names a tier already and a
        tier argument as well is a ValueError, as is tier_quantity without a tier. Keys derive
        from the reserve key as for hold(). See PricedRun for the flow.
        """
        planned = as_usage(estimate, "estimate")
        if tier:
            planned = with_tier(planned, tier, tier_quantity)
        elif tier_quantity:
            raise ValueError("tier_quantity needs a tier")
        hold = self.hold(
            account_id,
            estimate=planned,
            overrun_policy=overrun_policy,
            ttl=ttl,
            feature=feature,
            request_id=request_id,
            metadata=metadata,
            idempotency_key=idempotency_key,
            timeout=timeout,
        )
        return PricedRun(hold, tier=planned.tier, tier_quantity=planned.tier_quantity)

    # Balance and ledger.

    def get_balance(
        self, account_id: str, *, timeout: float | None = None
    ) -> credit_service_pb2.GetBalanceResponse:
        """Get an account's balance, held and available credits and active buckets (GetBalance)."""
        request = credit_service_pb2.GetBalanceRequest(account_id=account_id)
        return self._invoke(self._stub.GetBalance, request, timeout)

    def list_ledger_entries(
        self,
        account_id: str,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        kinds: Iterable[ledger_pb2.LedgerEntryKind.ValueType] = (),
        feature: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> credit_service_pb2.ListLedgerEntriesResponse:
        """List one page of an account's ledger entries, newest first (ListLedgerEntries).

        The times must be timezone-aware; start_time is inclusive and end_time exclusive.
        """
        request = credit_service_pb2.ListLedgerEntriesRequest(
            account_id=account_id,
            start_time=_timestamp(start_time, "start_time"),
            end_time=_timestamp(end_time, "end_time"),
            kinds=kinds,
            feature=feature,
            page_size=page_size,
            page_token=page_token,
        )
        return self._invoke(self._stub.ListLedgerEntries, request, timeout)

    def iter_ledger_entries(
        self,
        account_id: str,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        kinds: Iterable[ledger_pb2.LedgerEntryKind.ValueType] = (),
        feature: str = "",
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[ledger_pb2.LedgerEntry]:
        """Yield every matching ledger entry, newest first, fetching pages as they are needed."""
        kinds = tuple(kinds)  # A one-shot iterable must serve every page.

        def fetch(token: str) -> tuple[Iterable[ledger_pb2.LedgerEntry], str]:
            page = self.list_ledger_entries(
                account_id,
                start_time=start_time,
                end_time=end_time,
                kinds=kinds,
                feature=feature,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            return page.ledger_entries, page.next_page_token

        return _follow_pages(fetch)

    def refund_spend(
        self,
        ledger_entry_id: str,
        *,
        amount: Amount | None = None,
        reason: str = "",
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> credit_service_pb2.RefundSpendResponse:
        """Give back spent credits: amount, or all not yet refunded when None (RefundSpend)."""
        request = credit_service_pb2.RefundSpendRequest(
            ledger_entry_id=ledger_entry_id,
            amount=_optional_amount(amount, "amount"),
            reason=reason,
            idempotency_key=_key(idempotency_key),
        )
        return self._invoke(self._stub.RefundSpend, request, timeout)

    # Pricing (BillingService).

    def estimate_cost(
        self, usage: UsageLike, *, account_id: str = "", timeout: float | None = None
    ) -> billing_service_pb2.EstimateCostResponse:
        """Price usage before a run, itemized, with its minimum and maximum (EstimateCost).

        With account_id the account's overrides apply, and the answer says whether its
        available credits cover the maximum.
        """
        request = billing_service_pb2.EstimateCostRequest(
            usage=as_usage(usage), account_id=account_id
        )
        return self._invoke(self._billing.EstimateCost, request, timeout)

    def list_price_books(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> billing_service_pb2.ListPriceBooksResponse:
        """List one page of price book versions, newest first (ListPriceBooks)."""
        request = billing_service_pb2.ListPriceBooksRequest(
            page_size=page_size, page_token=page_token
        )
        return self._invoke(self._billing.ListPriceBooks, request, timeout)

    def iter_price_books(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[pricing_pb2.PriceBook]:
        """Yield every price book version, newest first, fetching pages as they are needed."""

        def fetch(token: str) -> tuple[Iterable[pricing_pb2.PriceBook], str]:
            page = self.list_price_books(page_size=page_size, page_token=token, timeout=timeout)
            return page.price_books, page.next_page_token

        return _follow_pages(fetch)

    def list_model_prices(
        self,
        *,
        version: int = 0,
        provider: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> billing_service_pb2.ListModelPricesResponse:
        """List one page of a version's model prices, the one in force when 0 (ListModelPrices)."""
        request = billing_service_pb2.ListModelPricesRequest(
            version=version, provider=provider, page_size=page_size, page_token=page_token
        )
        return self._invoke(self._billing.ListModelPrices, request, timeout)

    def iter_model_prices(
        self,
        *,
        version: int = 0,
        provider: str = "",
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[pricing_pb2.ModelPrice]:
        """Yield every model price of a version, fetching pages as they are needed.

        With version 0 every page asks for the version in force, so a version taking effect
        in between changes the remaining pages; pass the version to read one book throughout.
        """

        def fetch(token: str) -> tuple[Iterable[pricing_pb2.ModelPrice], str]:
            page = self.list_model_prices(
                version=version,
                provider=provider,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            return page.prices, page.next_page_token

        return _follow_pages(fetch)

    def get_model_price(
        self, provider: str, model: str, *, version: int = 0, timeout: float | None = None
    ) -> billing_service_pb2.GetModelPriceResponse:
        """Get one model's price in a version, the one in force when 0 (GetModelPrice)."""
        request = billing_service_pb2.GetModelPriceRequest(
            provider=provider, model=model, version=version
        )
        return self._invoke(self._billing.GetModelPrice, request, timeout)

    def upsert_model_prices(
        self,
        prices: Iterable[pricing_pb2.ModelPrice],
        *,
        effective_time: datetime | None = None,
        credit_usd: Amount | None = None,
        markup: Amount | None = None,
        note: str = "",
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> billing_service_pb2.UpsertModelPricesResponse:
        """Add or replace model prices as a new price book version (UpsertModelPrices).

        The new version applies from effective_time (timezone-aware; now when None); credit_usd
        and markup change the version's credit value and markup, and are kept when None.
        """
        request = billing_service_pb2.UpsertModelPricesRequest(
            prices=prices,
            effective_time=_timestamp(effective_time, "effective_time"),
            credit_usd=_optional_amount(credit_usd, "credit_usd"),
            markup=_optional_amount(markup, "markup"),
            note=note,
            idempotency_key=_key(idempotency_key),
        )
        return self._invoke(self._billing.UpsertModelPrices, request, timeout)

    def list_tiers(
        self, *, version: int = 0, timeout: float | None = None
    ) -> billing_service_pb2.ListTiersResponse:
        """List a version's tiers, the one in force when 0 (ListTiers)."""
        request = billing_service_pb2.ListTiersRequest(version=version)
        return self._invoke(self._billing.ListTiers, request, timeout)

    def upsert_tier(
        self,
        name: str,
        base_fee: Amount,
        *,
        fee_unit: str = "",
        description: str = "",
        effective_time: datetime | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> billing_service_pb2.UpsertTierResponse:
        """Add or replace one tier, base_fee credits per fee_unit, as a new version (UpsertTier).

        The new version applies from effective_time (timezone-aware; now when None).
        """
        request = billing_service_pb2.UpsertTierRequest(
            tier=pricing_pb2.Tier(
                name=name,
                base_fee=_amount(base_fee, "base_fee"),
                fee_unit=fee_unit,
                description=description,
            ),
            effective_time=_timestamp(effective_time, "effective_time"),
            idempotency_key=_key(idempotency_key),
        )
        return self._invoke(self._billing.UpsertTier, request, timeout)

    def set_account_price_override(
        self,
        account_id: str,
        provider: str,
        model: str,
        *,
        fixed_price: pricing_pb2.ModelPrice | None = None,
        discount_percent: Amount | None = None,
        effective_time: datetime | None = None,
        expire_time: datetime | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> billing_service_pb2.SetAccountPriceOverrideResponse:
        """Give one account a fixed price or a discount on a model (SetAccountPriceOverride).

        Give exactly one of fixed_price (its provider and model are ignored) and
        discount_percent (0 to 100; model "*" discounts every model of the provider), else
        ValueError before anything is sent. The times must be timezone-aware; the override
        applies from effective_time (now when None) until expire_time (never when None).
        """
        _exactly_one(fixed_price, discount_percent, "fixed_price", "discount_percent")
        override = pricing_pb2.AccountPriceOverride(
            account_id=account_id,
            provider=provider,
            model=model,
            fixed_price=fixed_price,
            discount_percent=_optional_amount(discount_percent, "discount_percent"),
            effective_time=_timestamp(effective_time, "effective_time"),
            expire_time=_timestamp(expire_time, "expire_time"),
        )
        request = billing_service_pb2.SetAccountPriceOverrideRequest(
            override=override, idempotency_key=_key(idempotency_key)
        )
        return self._invoke(self._billing.SetAccountPriceOverride, request, timeout)

    def list_account_price_overrides(
        self, account_id: str, *, timeout: float | None = None
    ) -> billing_service_pb2.ListAccountPriceOverridesResponse:
        """List an account's price overrides, newest first (ListAccountPriceOverrides)."""
        request = billing_service_pb2.ListAccountPriceOverridesRequest(account_id=account_id)
        return self._invoke(self._billing.ListAccountPriceOverrides, request, timeout)

    # Catalog, Checkout and Stripe events (BillingService).

    def list_plans(
        self, *, include_inactive: bool = False, timeout: float | None = None
    ) -> billing_service_pb2.ListPlansResponse:
        """List the catalog's subscription plans (ListPlans)."""
        request = billing_service_pb2.ListPlansRequest(include_inactive=include_inactive)
        return self._invoke(self._billing.ListPlans, request, timeout)

    def list_credit_packages(
        self, *, include_inactive: bool = False, timeout: float | None = None
    ) -> billing_service_pb2.ListCreditPackagesResponse:
        """List the catalog's credit packages (ListCreditPackages)."""
        request = billing_service_pb2.ListCreditPackagesRequest(include_inactive=include_inactive)
        return self._invoke(self._billing.ListCreditPackages, request, timeout)

    def create_checkout_session(
        self,
        account_id: str,
        *,
        package_id: str = "",
        plan_id: str = "",
        success_url: str,
        cancel_url: str,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> billing_service_pb2.CreateCheckoutSessionResponse:
        """Start a Stripe Checkout session for a package or a plan (CreateCheckoutSession)."""
        _exactly_one(package_id or None, plan_id or None, "package_id", "plan_id")
        request = billing_service_pb2.CreateCheckoutSessionRequest(
            account_id=account_id,
            success_url=success_url,
            cancel_url=cancel_url,
            idempotency_key=_key(idempotency_key),
        )
        if package_id:
            request.package_id = package_id
        else:
            request.plan_id = plan_id
        return self._invoke(self._billing.CreateCheckoutSession, request, timeout)

    def create_portal_session(
        self, account_id: str, *, return_url: str, timeout: float | None = None
    ) -> billing_service_pb2.CreatePortalSessionResponse:
        """Open a Stripe customer portal session for an account (CreatePortalSession)."""
        request = billing_service_pb2.CreatePortalSessionRequest(
            account_id=account_id, return_url=return_url
        )
        return self._invoke(self._billing.CreatePortalSession, request, timeout)

    def get_entitlements(
        self, account_id: str, *, timeout: float | None = None
    ) -> billing_service_pb2.GetEntitlementsResponse:
        """Get an account's plan, allowance and balance (GetEntitlements)."""
        request = billing_service_pb2.GetEntitlementsRequest(account_id=account_id)
        return self._invoke(self._billing.GetEntitlements, request, timeout)

    def list_subscriptions(
        self,
        *,
        account_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> billing_service_pb2.ListSubscriptionsResponse:
        """List one page of mirrored Stripe subscriptions (ListSubscriptions)."""
        request = billing_service_pb2.ListSubscriptionsRequest(
            account_id=account_id, page_size=page_size, page_token=page_token
        )
        return self._invoke(self._billing.ListSubscriptions, request, timeout)

    def iter_subscriptions(
        self, *, account_id: str = "", page_size: int = 0, timeout: float | None = None
    ) -> Iterator[subscription_pb2.Subscription]:
        """Yield every mirrored subscription, fetching pages as they are needed."""

        def fetch(token: str) -> tuple[Iterable[subscription_pb2.Subscription], str]:
            page = self.list_subscriptions(
                account_id=account_id, page_size=page_size, page_token=token, timeout=timeout
            )
            return page.subscriptions, page.next_page_token

        return _follow_pages(fetch)

    def apply_stripe_event(
        self,
        event: stripe_event_pb2.StripeEvent,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> billing_service_pb2.ApplyStripeEventResponse:
        """Apply one verified Stripe event (ApplyStripeEvent).

        The key defaults to "stripe:" + the event id, so a redelivered event is the same call.
        """
        request = billing_service_pb2.ApplyStripeEventRequest(
            event=event, idempotency_key=idempotency_key or f"stripe:{event.event_id}"
        )
        return self._invoke(self._billing.ApplyStripeEvent, request, timeout)

    def _invoke(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        """Call method with request, retrying passing failures; raise typed errors.

        The request, idempotency key included, is built once by the caller, so every attempt
        sends exactly the same message.
        """
        deadline = self._timeout if timeout is None else timeout

        def attempt() -> _Response:
            try:
                return method(
                    request,
                    timeout=deadline,
                    metadata=self._call_metadata,
                    wait_for_ready=self._wait_for_ready,
                )
            except grpc.RpcError as err:
                raise from_grpc_error(err) from err

        return call_with_retry(attempt, self._retry)


def _amount(value: Amount, name: str = "amount") -> str:
    """The canonical decimal string of an amount: no exponent, no trailing zeros, no "-0".

    float (and bool) is a TypeError, because a float cannot hold most decimal amounts exactly;
    text that is not a finite decimal is a ValueError. Range and precision are the server's to
    judge, so they are not checked here.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        raise TypeError(
            f"{name} must be a Decimal, str or int, not {type(value).__name__}: "
            "a float cannot hold a credit amount exactly"
        )
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{name} is not a decimal number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be a finite decimal number, got {value!r}")
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _optional_amount(value: Amount | None, name: str) -> str:
    """The canonical string of an amount, or "" (the field's unset value) for None."""
    return "" if value is None else _amount(value, name)


def _exactly_one(first: object, second: object, first_name: str, second_name: str) -> None:
    """Refuse a call that gives both of two alternatives, or neither, before it is sent."""
    if (first is None) == (second is None):
        raise ValueError(f"give exactly one of {first_name} and {second_name}")


def _overrun_policy(
    policy: pricing_pb2.OverrunPolicy.ValueType | None,
) -> pricing_pb2.OverrunPolicy.ValueType:
    """The policy to send; None leaves it unspecified, which the server reads as its default."""
    return pricing_pb2.OVERRUN_POLICY_UNSPECIFIED if policy is None else policy


def _key(idempotency_key: str | None) -> str:
    """The caller's idempotency key, or a fresh random one for this call and its retries."""
    return uuid.uuid4().hex if idempotency_key is None else idempotency_key


def _timestamp(value: datetime | None, name: str) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for an aware datetime; a naive one is refused as ambiguous."""
    if value is None:
        return None
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, such as datetime.now(UTC)")
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value)
    return timestamp


def _duration(value: timedelta | None) -> duration_pb2.Duration | None:
    """A Duration for a timedelta, or None to leave the field unset."""
    if value is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def _follow_pages(fetch: Callable[[str], tuple[Iterable[_Item], str]]) -> Iterator[_Item]:
    """Yield the items of every page, passing each page's next token to fetch the next."""
    token = ""
    while True:
        items, token = fetch(token)
        yield from items
        if not token:
            return
