"""Pricing end to end through grpcurl against a real `creditline serve`: the shipped price book
is loaded at start-up, estimates are priced from it, and an estimate-sized hold settles from
actual token counts at the version it pinned, even after the price changes."""

from __future__ import annotations

import uuid
from decimal import ROUND_CEILING, Decimal
from typing import Any

import pytest

from tests.e2e.conftest import Grpcurl, ServerProcess
from tests.e2e.test_grpcurl import new_key, open_account

pytestmark = pytest.mark.e2e

BILLING = "creditline.v1.BillingService"
MICRO = Decimal("0.000001")


@pytest.fixture(scope="module")
def grpcurl(server_process: ServerProcess) -> Grpcurl:
    """grpcurl aimed at the module's server."""
    return Grpcurl(server_process.address)


def credits_for(tokens: int, usd_per_mtok: Decimal, credit_usd: Decimal) -> Decimal:
    """The rounding rule, written independently: exact, then up to the next micro-credit."""
    exact = Decimal(tokens) * usd_per_mtok / Decimal(1_000_000) / credit_usd
    return exact.quantize(MICRO, rounding=ROUND_CEILING)


def price_of(grpcurl: Grpcurl, model: str) -> tuple[dict[str, Any], Decimal, int]:
    """The model's price in the version in force, that version's credit value and number."""
    answer = grpcurl.call(f"{BILLING}/GetModelPrice", {"provider": "openai", "model": model})
    book = answer["price_book"]
    return answer["price"], Decimal(book["credit_usd"]), int(book["version"])


def test_the_shipped_price_book_is_in_force(grpcurl: Grpcurl) -> None:
    books = grpcurl.call(f"{BILLING}/ListPriceBooks")["price_books"]
    first = books[-1]
    assert first["version"] == "1"
    assert first["model_count"] >= 30
    providers = {
        p["provider"]
        for p in grpcurl.call(f"{BILLING}/ListModelPrices", {"page_size": 1000})["prices"]
    }
    assert len(providers) >= 7
    tiers = {t["name"]: t for t in grpcurl.call(f"{BILLING}/ListTiers")["tiers"]}
    assert tiers["TIER_1A"]["base_fee"] == "10"


def test_estimate_matches_the_listed_prices(grpcurl: Grpcurl) -> None:
    price, credit, _ = price_of(grpcurl, "gpt-4o-mini")
    answer = grpcurl.call(
        f"{BILLING}/EstimateCost",
        {
            "usage": {
                "lines": [
                    {
                        "provider": "openai",
                        "model": "gpt-4o-mini",
                        "input_tokens": 12345,
                        "cached_input_tokens": 1001,
                        "output_tokens": 777,
                    }
                ],
                "tier": "TIER_1A",
                "tier_quantity": 3,
            }
        },
    )["estimate"]
    expected_lines = {
        "TOKEN_CLASS_INPUT": credits_for(12345, Decimal(price["input_per_mtok"]), credit),
        "TOKEN_CLASS_CACHED_INPUT": credits_for(
            1001, Decimal(price["cached_input_per_mtok"]), credit
        ),
        "TOKEN_CLASS_OUTPUT": credits_for(777, Decimal(price["output_per_mtok"]), credit),
    }
    (item,) = answer["items"]
    assert {line["token_class"]: Decimal(line["credits"]) for line in item["lines"]} == (
        expected_lines
    )
    assert Decimal(answer["base_fee_credits"]) == 30
    total = sum(expected_lines.values()) + 30
    assert Decimal(answer["total_credits"]) == total
    assert Decimal(answer["total_usd"]) == total * credit


def test_hold_sized_by_estimate_settles_at_its_pinned_version(grpcurl: Grpcurl) -> None:
    account = open_account(grpcurl, Decimal(1000))
    before, credit, version = price_of(grpcurl, "gpt-4o")
    usage = {"provider": "openai", "model": "gpt-4o", "input_tokens": 4000}
    hold = grpcurl.call(
        "ReserveCredits",
        {
            "account_id": account,
            "estimate": {"lines": [{**usage, "max_output_tokens": 2000}]},
            "overrun_policy": "OVERRUN_POLICY_CAP",
            "idempotency_key": new_key(),
        },
    )["reservation"]
    held = credits_for(4000, Decimal(before["input_per_mtok"]), credit) + credits_for(
        2000, Decimal(before["output_per_mtok"]), credit
    )
    assert Decimal(hold["amount"]) == held
    assert hold["estimate"]["price_book_version"] == str(version)

    raised = grpcurl.call(
        f"{BILLING}/UpsertModelPrices",
        {
            "prices": [{**before, "output_per_mtok": str(Decimal(before["output_per_mtok"]) * 3)}],
            "note": f"e2e price rise {uuid.uuid4().hex[:6]}",
            "idempotency_key": new_key(),
        },
    )["price_book"]
    assert int(raised["version"]) > version

    done = grpcurl.call(
        "CommitReservation",
        {
            "reservation_id": hold["reservation_id"],
            "actual_usage": {"lines": [{**usage, "output_tokens": 1234}]},
            "idempotency_key": new_key(),
        },
    )
    actual = credits_for(4000, Decimal(before["input_per_mtok"]), credit) + credits_for(
        1234, Decimal(before["output_per_mtok"]), credit
    )
    assert Decimal(done["charged"]) == actual
    assert done["actual_cost"]["price_book_version"] == str(version)
    output = next(c for c in done["comparisons"] if c["token_class"] == "TOKEN_CLASS_OUTPUT")
    assert (output["estimated_quantity"], output["actual_quantity"]) == ("2000", "1234")

    entry = done["ledger_entry"]
    assert Decimal(entry["amount"]) == -actual
    assert entry["price_book_version"] == str(version)
    assert entry["usage"][0]["model"] == "gpt-4o"
    assert entry["usage"][0]["output_tokens"] == "1234"
    history = grpcurl.call(
        "ListLedgerEntries", {"account_id": account, "kinds": ["LEDGER_ENTRY_KIND_SPEND"]}
    )["ledger_entries"]
    assert [h["entry_id"] for h in history] == [entry["entry_id"]]

    now = grpcurl.call(
        f"{BILLING}/EstimateCost",
        {"usage": {"lines": [{**usage, "output_tokens": 1234}]}},
    )["estimate"]
    assert Decimal(now["total_credits"]) > actual


def test_unknown_model_is_not_found_naming_it(grpcurl: Grpcurl) -> None:
    error = grpcurl.fail(
        f"{BILLING}/EstimateCost",
        {"usage": {"lines": [{"provider": "openai", "model": "gpt-nope", "input_tokens": 1}]}},
    )
    info = error.error_info()
    assert (info["reason"], info["metadata"]["model"]) == ("MODEL_NOT_FOUND", "openai/gpt-nope")


def test_the_shipped_catalog_is_on_sale_and_stripe_calls_say_what_to_configure(
    grpcurl: Grpcurl,
) -> None:
    plans = grpcurl.call(f"{BILLING}/ListPlans")["plans"]
    assert {p["plan_id"] for p in plans} >= {"starter_monthly", "ultimate_yearly"}
    packages = grpcurl.call(f"{BILLING}/ListCreditPackages")["packages"]
    assert [p["credits"] for p in packages] == ["100", "500", "2000"]
    account = open_account(grpcurl, Decimal(100))
    error = grpcurl.fail(
        f"{BILLING}/CreateCheckoutSession",
        {
            "account_id": account,
            "package_id": "pack_100",
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/no",
            "idempotency_key": new_key(),
        },
    )
    assert error.code == 9  # FAILED_PRECONDITION: this server has no STRIPE_SECRET_KEY
    assert error.error_info()["reason"] == "STRIPE_NOT_CONFIGURED"
    entitlements = grpcurl.call(f"{BILLING}/GetEntitlements", {"account_id": account})
    assert entitlements["entitlements"]["balance"]["balance"] == "100"
