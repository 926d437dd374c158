"""BillingService: cost estimates, the price book, the catalog, Checkout, entitlements and
Stripe events, translated to and from the use cases."""

from __future__ import annotations

from typing import Any

import grpc
from creditline.v1 import billing_service_pb2 as pb
from creditline.v1 import billing_service_pb2_grpc

from billing_service.domain.amounts import format_amount, parse_amount
from billing_service.domain.errors import InvalidField
from billing_service.domain.price_rules import parse_percent, parse_usd
from billing_service.domain.pricing import Tier
from billing_service.rpc import billing_convert, pricing_convert, wire
from billing_service.rpc.errors import translated, translated_async
from billing_service.service_layer import billing, pricing, stripe_events
from billing_service.service_layer.context import AppContext


class BillingServicer(billing_service_pb2_grpc.BillingServiceServicer):
    """The creditline.v1.BillingService implementation."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx

    @translated_async
    async def EstimateCost(
        self, request: pb.EstimateCostRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EstimateCostResponse:
        result = await pricing.estimate_cost_async(
            self._ctx, pricing_convert.usage_in(request.usage), request.account_id
        )
        return pb.EstimateCostResponse(
            estimate=pricing_convert.cost_out(result.cost),
            covered=result.covered,
            available="" if result.available is None else format_amount(result.available),
        )

    @translated
    def ListPriceBooks(
        self, request: pb.ListPriceBooksRequest, context: grpc.ServicerContext
    ) -> pb.ListPriceBooksResponse:
        page = pricing.list_price_books(self._ctx, size=request.page_size, token=request.page_token)
        return pb.ListPriceBooksResponse(
            price_books=[pricing_convert.price_book_out(b) for b in page.items],
            next_page_token=page.next_token,
        )

    @translated
    def ListModelPrices(
        self, request: pb.ListModelPricesRequest, context: grpc.ServicerContext
    ) -> pb.ListModelPricesResponse:
        page, book = pricing.list_model_prices(
            self._ctx,
            version=request.version,
            provider=request.provider,
            size=request.page_size,
            token=request.page_token,
        )
        return pb.ListModelPricesResponse(
            prices=[pricing_convert.model_price_out(m) for m in page.items],
            price_book=pricing_convert.price_book_out(book),
            next_page_token=page.next_token,
        )

    @translated
    def GetModelPrice(
        self, request: pb.GetModelPriceRequest, context: grpc.ServicerContext
    ) -> pb.GetModelPriceResponse:
        price, book = pricing.get_model_price(
            self._ctx, provider=request.provider, model=request.model, version=request.version
        )
        return pb.GetModelPriceResponse(
            price=pricing_convert.model_price_out(price),
            price_book=pricing_convert.price_book_out(book),
        )

    @translated
    def UpsertModelPrices(
        self, request: pb.UpsertModelPricesRequest, context: grpc.ServicerContext
    ) -> pb.UpsertModelPricesResponse:
        outcome = pricing.upsert_model_prices(
            self._ctx,
            prices=[
                pricing_convert.model_price_in(p, f"prices[{i}]")
                for i, p in enumerate(request.prices)
            ],
            effective_at=wire.time_in(
                request.effective_time, request.HasField("effective_time"), "effective_time"
            ),
            credit_usd=parse_usd(request.credit_usd, "credit_usd", positive=True),
            markup=parse_usd(request.markup, "markup"),
            note=request.note,
            idempotency_key=request.idempotency_key,
        )
        return pb.UpsertModelPricesResponse(
            price_book=pricing_convert.price_book_out(outcome.result.price_book),
            replayed=outcome.replayed,
        )

    @translated
    def ListTiers(
        self, request: pb.ListTiersRequest, context: grpc.ServicerContext
    ) -> pb.ListTiersResponse:
        book = pricing.get_price_book(self._ctx, request.version)
        return pb.ListTiersResponse(
            tiers=[pricing_convert.tier_out(t) for t in book.tiers],
            price_book=pricing_convert.price_book_out(book),
        )

    @translated
    def UpsertTier(
        self, request: pb.UpsertTierRequest, context: grpc.ServicerContext
    ) -> pb.UpsertTierResponse:
        tier = request.tier
        outcome = pricing.upsert_tier(
            self._ctx,
            tier=Tier(
                name=tier.name,
                base_fee=parse_amount(tier.base_fee, "tier.base_fee", allow_zero=True),
                fee_unit=tier.fee_unit,
                description=tier.description,
            ),
            effective_at=wire.time_in(
                request.effective_time, request.HasField("effective_time"), "effective_time"
            ),
            idempotency_key=request.idempotency_key,
        )
        return pb.UpsertTierResponse(
            tier=pricing_convert.tier_out(outcome.result.tier),
            price_book=pricing_convert.price_book_out(outcome.result.price_book),
            replayed=outcome.replayed,
        )

    @translated
    def SetAccountPriceOverride(
        self, request: pb.SetAccountPriceOverrideRequest, context: grpc.ServicerContext
    ) -> pb.SetAccountPriceOverrideResponse:
        override = request.override
        fixed = (
            pricing_convert.model_price_in(override.fixed_price, "override.fixed_price")
            if override.HasField("fixed_price")
            else None
        )
        discount = (
            parse_percent(override.discount_percent, "override.discount_percent")
            if override.discount_percent
            else None
        )
        outcome = pricing.set_account_price_override(
            self._ctx,
            account_id=override.account_id,
            provider=override.provider,
            model=override.model,
            fixed=fixed,
            discount_percent=discount,
            effective_at=wire.time_in(
                override.effective_time,
                override.HasField("effective_time"),
                "override.effective_time",
            ),
            expires_at=wire.time_in(
                override.expire_time, override.HasField("expire_time"), "override.expire_time"
            ),
            idempotency_key=request.idempotency_key,
        )
        return pb.SetAccountPriceOverrideResponse(
            override=pricing_convert.override_out(outcome.result.override),
            replayed=outcome.replayed,
        )

    @translated
    def ListAccountPriceOverrides(
        self, request: pb.ListAccountPriceOverridesRequest, context: grpc.ServicerContext
    ) -> pb.ListAccountPriceOverridesResponse:
        overrides = pricing.list_account_price_overrides(self._ctx, request.account_id)
        return pb.ListAccountPriceOverridesResponse(
            overrides=[pricing_convert.override_out(o) for o in overrides]
        )

    @translated
    def ListPlans(
        self, request: pb.ListPlansRequest, context: grpc.ServicerContext
    ) -> pb.ListPlansResponse:
        plans = billing.list_plans(self._ctx, include_inactive=request.include_inactive)
        return pb.ListPlansResponse(plans=[billing_convert.plan_out(p) for p in plans])

    @translated
    def ListCreditPackages(
        self, request: pb.ListCreditPackagesRequest, context: grpc.ServicerContext
    ) -> pb.ListCreditPackagesResponse:
        packages = billing.list_packages(self._ctx, include_inactive=request.include_inactive)
        return pb.ListCreditPackagesResponse(
            packages=[billing_convert.package_out(p) for p in packages]
        )

    @translated
    def CreateCheckoutSession(
        self, request: pb.CreateCheckoutSessionRequest, context: grpc.ServicerContext
    ) -> pb.CreateCheckoutSessionResponse:
        result = billing.create_checkout_session(
            self._ctx,
            account_id=request.account_id,
            package_id=request.package_id,
            plan_id=request.plan_id,
            success_url=request.success_url,
            cancel_url=request.cancel_url,
            idempotency_key=request.idempotency_key,
        )
        return pb.CreateCheckoutSessionResponse(
            session_id=result.session.id,
            url=result.session.url,
            stripe_customer_id=result.customer_id,
        )

    @translated
    def CreatePortalSession(
        self, request: pb.CreatePortalSessionRequest, context: grpc.ServicerContext
    ) -> pb.CreatePortalSessionResponse:
        url = billing.create_portal_session(
            self._ctx, account_id=request.account_id, return_url=request.return_url
        )
        return pb.CreatePortalSessionResponse(url=url)

    @translated
    def GetEntitlements(
        self, request: pb.GetEntitlementsRequest, context: grpc.ServicerContext
    ) -> pb.GetEntitlementsResponse:
        view = billing.get_entitlements(self._ctx, request.account_id)
        return pb.GetEntitlementsResponse(entitlements=billing_convert.entitlements_out(view))

    @translated
    def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: grpc.ServicerContext
    ) -> pb.ListSubscriptionsResponse:
        page = billing.list_subscriptions(
            self._ctx,
            account_id=request.account_id,
            size=request.page_size,
            token=request.page_token,
        )
        return pb.ListSubscriptionsResponse(
            subscriptions=[billing_convert.subscription_out(s) for s in page.items],
            next_page_token=page.next_token,
        )

    @translated
    def ApplyStripeEvent(
        self, request: pb.ApplyStripeEventRequest, context: grpc.ServicerContext
    ) -> pb.ApplyStripeEventResponse:
        if not request.HasField("event"):
            raise InvalidField("event", "is required")
        outcome = stripe_events.apply_stripe_event(
            self._ctx,
            billing_convert.event_in(request.event),
            idempotency_key=request.idempotency_key,
        )
        number, detail, grant_ids = billing_convert.result_out(outcome.result)
        return pb.ApplyStripeEventResponse(
            outcome=number,  # type: ignore[arg-type]
            detail=detail,
            grant_ids=grant_ids,
            replayed=outcome.replayed,
        )
