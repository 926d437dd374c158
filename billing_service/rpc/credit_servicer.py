"""CreditService: each method converts the request, calls one use case, converts the answer."""

from __future__ import annotations

from typing import Any

import grpc
from creditline.v1 import credit_service_pb2 as pb
from creditline.v1 import credit_service_pb2_grpc

from billing_service.domain.amounts import format_amount
from billing_service.domain.errors import InvalidField
from billing_service.domain.model import (
    BillingMode,
    EntryKind,
    GrantSource,
    GrantStatus,
    ReservationStatus,
)
from billing_service.domain.pricing import OverrunPolicy
from billing_service.rpc import convert, pricing_convert, wire
from billing_service.rpc.errors import translated, translated_async
from billing_service.service_layer import accounts, credits, queries
from billing_service.service_layer.context import AppContext


class CreditServicer(credit_service_pb2_grpc.CreditServiceServicer):
    """The creditline.v1.CreditService implementation."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx

    @translated
    def GetAccount(
        self, request: pb.GetAccountRequest, context: grpc.ServicerContext
    ) -> pb.GetAccountResponse:
        account = accounts.get_account(self._ctx, request.account_id)
        return pb.GetAccountResponse(account=convert.account_out(account))

    @translated
    def ListAccounts(
        self, request: pb.ListAccountsRequest, context: grpc.ServicerContext
    ) -> pb.ListAccountsResponse:
        page = accounts.list_accounts(
            self._ctx,
            size=request.page_size,
            token=request.page_token,
            parent_id=request.parent_account_id,
        )
        return pb.ListAccountsResponse(
            accounts=[convert.account_out(a) for a in page.items],
            next_page_token=page.next_token,
        )

    @translated
    def CreateAccount(
        self, request: pb.CreateAccountRequest, context: grpc.ServicerContext
    ) -> pb.CreateAccountResponse:
        account = request.account
        outcome = accounts.create_account(
            self._ctx,
            account_id=account.account_id,
            billing_mode=wire.enum_in(
                BillingMode,
                "BILLING_MODE",
                account.billing_mode,
                "account.billing_mode",
                required=True,
            ),
            stripe_customer_id=account.stripe_customer_id,
            parent_id=account.parent_account_id,
            low_balance_threshold=convert.optional_amount_in(
                account.low_balance_threshold, "account.low_balance_threshold"
            ),
            metadata=convert.labels_in(account.metadata),
            idempotency_key=request.idempotency_key,
        )
        return pb.CreateAccountResponse(
            account=convert.account_out(outcome.result.account), replayed=outcome.replayed
        )

    @translated
    def UpdateAccount(
        self, request: pb.UpdateAccountRequest, context: grpc.ServicerContext
    ) -> pb.UpdateAccountResponse:
        account = request.account
        fields = list(request.update_mask.paths)
        outcome = accounts.update_account(
            self._ctx,
            account_id=account.account_id,
            fields=fields,
            billing_mode=wire.enum_in(
                BillingMode,
                "BILLING_MODE",
                account.billing_mode,
                "account.billing_mode",
                required="billing_mode" in fields,
            ),
            stripe_customer_id=account.stripe_customer_id,
            parent_id=account.parent_account_id,
            low_balance_threshold=convert.optional_amount_in(
                account.low_balance_threshold, "account.low_balance_threshold"
            ),
            metadata=convert.labels_in(account.metadata),
            idempotency_key=request.idempotency_key,
        )
        return pb.UpdateAccountResponse(
            account=convert.account_out(outcome.result.account), replayed=outcome.replayed
        )

    @translated
    def GrantCredits(
        self, request: pb.GrantCreditsRequest, context: grpc.ServicerContext
    ) -> pb.GrantCreditsResponse:
        outcome = credits.grant_credits(
            self._ctx,
            account_id=request.account_id,
            amount=convert.amount_in(request.amount, "amount"),
            source=wire.enum_in(
                GrantSource, "GRANT_SOURCE", request.source, "source", required=True
            ),
            priority=request.priority if request.HasField("priority") else None,
            effective_at=wire.time_in(
                request.effective_time, request.HasField("effective_time"), "effective_time"
            ),
            expires_at=wire.time_in(
                request.expire_time, request.HasField("expire_time"), "expire_time"
            ),
            description=request.description,
            metadata=convert.labels_in(request.metadata),
            idempotency_key=request.idempotency_key,
        )
        result = outcome.result
        return pb.GrantCreditsResponse(
            grant=convert.grant_out(result.grant),
            ledger_entry=convert.entry_out(result.entry) if result.entry else None,
            replayed=outcome.replayed,
        )

    @translated
    def ListGrants(
        self, request: pb.ListGrantsRequest, context: grpc.ServicerContext
    ) -> pb.ListGrantsResponse:
        page = queries.list_grants(
            self._ctx,
            account_id=request.account_id,
            size=request.page_size,
            token=request.page_token,
            statuses=wire.enums_in(GrantStatus, "GRANT_STATUS", request.statuses, "statuses"),
        )
        return pb.ListGrantsResponse(
            grants=[convert.grant_out(b) for b in page.items], next_page_token=page.next_token
        )

    @translated
    def VoidGrant(
        self, request: pb.VoidGrantRequest, context: grpc.ServicerContext
    ) -> pb.VoidGrantResponse:
        outcome = credits.void_grant(
            self._ctx,
            grant_id=request.grant_id,
            reason=request.reason,
            idempotency_key=request.idempotency_key,
        )
        result = outcome.result
        return pb.VoidGrantResponse(
            grant=convert.grant_out(result.grant),
            ledger_entry=convert.entry_out(result.entry) if result.entry else None,
            replayed=outcome.replayed,
        )

    @translated_async
    async def SpendCredits(
        self, request: pb.SpendCreditsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SpendCreditsResponse:
        outcome = await credits.spend_credits.run_async(
            self._ctx,
            account_id=request.account_id,
            amount=convert.amount_in(request.amount, "amount"),
            feature=request.feature,
            request_id=request.request_id,
            metadata=convert.labels_in(request.metadata),
            idempotency_key=request.idempotency_key,
        )
        return pb.SpendCreditsResponse(
            ledger_entry=convert.entry_out(outcome.result.entry),
            available=format_amount(outcome.result.available),
            replayed=outcome.replayed,
        )

    @translated_async
    async def ReserveCredits(
        self, request: pb.ReserveCreditsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReserveCreditsResponse:
        has_estimate = request.HasField("estimate")
        outcome = await credits.reserve_credits.run_async(
            self._ctx,
            account_id=request.account_id,
            amount=None
            if has_estimate and not request.amount
            else convert.amount_in(request.amount, "amount"),
            estimate=pricing_convert.usage_in(request.estimate) if has_estimate else None,
            overrun_policy=wire.enum_in(
                OverrunPolicy,
                "OVERRUN_POLICY",
                request.overrun_policy,
                "overrun_policy",
                required=False,
            ),
            ttl=wire.duration_in(request.ttl, request.HasField("ttl"), "ttl"),
            feature=request.feature,
            request_id=request.request_id,
            metadata=convert.labels_in(request.metadata),
            idempotency_key=request.idempotency_key,
        )
        return pb.ReserveCreditsResponse(
            reservation=convert.reservation_out(outcome.result.reservation),
            replayed=outcome.replayed,
        )

    @translated_async
    async def CommitReservation(
        self, request: pb.CommitReservationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CommitReservationResponse:
        has_usage = request.HasField("actual_usage")
        outcome = await credits.commit_reservation.run_async(
            self._ctx,
            reservation_id=request.reservation_id,
            amount=None
            if has_usage and not request.amount
            else convert.amount_in(request.amount, "amount", allow_zero=True),
            usage=pricing_convert.usage_in(request.actual_usage) if has_usage else None,
            idempotency_key=request.idempotency_key,
        )
        result = outcome.result
        return pb.CommitReservationResponse(
            reservation=convert.reservation_out(result.reservation),
            ledger_entry=convert.entry_out(result.entry) if result.entry else None,
            replayed=outcome.replayed,
            actual_cost=pricing_convert.cost_out(result.actual_cost)
            if result.actual_cost
            else None,
            comparisons=pricing_convert.comparisons_out(result.comparisons),
            charged=format_amount(result.charged or 0),
        )

    @translated_async
    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReleaseReservationResponse:
        outcome = await credits.release_reservation.run_async(
            self._ctx,
            reservation_id=request.reservation_id,
            idempotency_key=request.idempotency_key,
        )
        return pb.ReleaseReservationResponse(
            reservation=convert.reservation_out(outcome.result.reservation),
            replayed=outcome.replayed,
        )

    @translated
    def GetReservation(
        self, request: pb.GetReservationRequest, context: grpc.ServicerContext
    ) -> pb.GetReservationResponse:
        hold = queries.get_reservation(self._ctx, request.reservation_id)
        return pb.GetReservationResponse(reservation=convert.reservation_out(hold))

    @translated
    def ListReservations(
        self, request: pb.ListReservationsRequest, context: grpc.ServicerContext
    ) -> pb.ListReservationsResponse:
        page = queries.list_reservations(
            self._ctx,
            account_id=request.account_id,
            size=request.page_size,
            token=request.page_token,
            statuses=wire.enums_in(
                ReservationStatus, "RESERVATION_STATUS", request.statuses, "statuses"
            ),
        )
        return pb.ListReservationsResponse(
            reservations=[convert.reservation_out(r) for r in page.items],
            next_page_token=page.next_token,
        )

    @translated_async
    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetBalanceResponse:
        view = await queries.get_balance_async(self._ctx, request.account_id)
        return pb.GetBalanceResponse(balance=convert.balance_out(view))

    @translated
    def ListLedgerEntries(
        self, request: pb.ListLedgerEntriesRequest, context: grpc.ServicerContext
    ) -> pb.ListLedgerEntriesResponse:
        page = queries.list_ledger_entries(
            self._ctx,
            account_id=request.account_id,
            size=request.page_size,
            token=request.page_token,
            start=wire.time_in(request.start_time, request.HasField("start_time"), "start_time"),
            end=wire.time_in(request.end_time, request.HasField("end_time"), "end_time"),
            kinds=wire.enums_in(EntryKind, "LEDGER_ENTRY_KIND", request.kinds, "kinds"),
            feature=request.feature,
        )
        return pb.ListLedgerEntriesResponse(
            ledger_entries=[convert.entry_out(e) for e in page.items],
            next_page_token=page.next_token,
        )

    @translated
    def RefundSpend(
        self, request: pb.RefundSpendRequest, context: grpc.ServicerContext
    ) -> pb.RefundSpendResponse:
        amount = convert.optional_amount_in(request.amount, "amount")
        if amount == 0:
            raise InvalidField("amount", "must be greater than zero, or empty for all")
        outcome = credits.refund_spend(
            self._ctx,
            entry_id=request.ledger_entry_id,
            amount=amount,
            reason=request.reason,
            idempotency_key=request.idempotency_key,
        )
        return pb.RefundSpendResponse(
            ledger_entry=convert.entry_out(outcome.result.entry), replayed=outcome.replayed
        )
