"""Catalog sync between a catalog file, the database (SQLite and PostgreSQL) and the fake Stripe:
push creates every product and price and records their ids, a second push writes nothing to
Stripe, a changed price is replaced (new price takes the lookup key, old one deactivated), pull
rebuilds the catalog in an empty database, and the start-up seed loads the default once."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe
from sqlalchemy import Engine, func, select

from billing_service.catalog.catalog_file import DEFAULT_PATH, CatalogFileError, read
from billing_service.catalog.commands import pull_catalog, push_catalog, seed_default_catalog
from billing_service.db.catalog import CatalogRepository
from billing_service.db.tables import catalog_items
from billing_service.domain.catalog import CatalogItem, CreditPackage, Plan
from billing_service.domain.errors import FailedPrecondition, StripeUnavailable
from billing_service.service_layer.context import AppContext
from billing_service.stripe.catalog_sync import Change, pull, push
from tests.fakes.fixtures import fake_stripe, stripe_client
from tests.fakes.stripe_server import FakeStripe

__all__ = ["fake_stripe", "stripe_client"]  # fixtures used by the tests below

DEFAULT_ITEMS = 11  # 3 packages, 4 plans monthly and yearly


def quiet(_line: str) -> None:
    """Progress that goes nowhere."""


def catalog_in_db(ctx: AppContext) -> dict[str, CatalogItem]:
    items = ctx.db.read(lambda tx: CatalogRepository(tx.connection).all())
    return {item.id: item for item in items}


def posts(fake: FakeStripe, since: int = 0) -> list[str]:
    return [f"POST {r.path}" for r in fake.requests[since:] if r.method == "POST"]


def default_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DEFAULT_PATH.read_text())
    return document


def write_catalog(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(document))
    return path


def entry(document: dict[str, Any], item_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        e for section in ("packages", "plans") for e in document[section] if e["id"] == item_id
    )
    return found


def test_push_creates_every_product_and_price_and_records_their_ids(
    ctx: AppContext, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    lines: list[str] = []

    report = push_catalog(ctx.db, stripe_client, None, ctx.clock, lines.append)

    assert len(report.created) == DEFAULT_ITEMS
    assert len(lines) == DEFAULT_ITEMS
    assert "created price price_" in lines[0]
    assert lines[0].endswith("for package pack_100; created product creditline_pack_100")
    prices = {p["lookup_key"]: p for p in fake_stripe.objects("price")}
    products = {p["id"]: p for p in fake_stripe.objects("product")}
    in_db = catalog_in_db(ctx)
    assert set(in_db) == {item.id for item in read(DEFAULT_PATH)}
    for item in in_db.values():
        price = prices[item.lookup_key]
        assert price["id"] == item.stripe_price_id
        assert price["product"] == item.stripe_product_id == f"creditline_{item.id}"
        assert products[item.stripe_product_id]["name"] == item.name
        assert price["unit_amount"] == item.unit_amount
        assert price["active"]
        assert price["metadata"]["creditline_id"] == item.id
    pro = prices["creditline_pro_monthly"]
    assert pro["recurring"]["interval"] == "month"
    assert pro["metadata"] == {
        "includedCredits": "400",
        "creditline_id": "pro_monthly",
        "creditline_kind": "plan",
        "renewalPolicy": "ROLLOVER",
        "rolloverCap": "400",
    }
    assert prices["creditline_ultimate_yearly"]["recurring"]["interval"] == "year"
    assert "rolloverCap" not in prices["creditline_ultimate_yearly"]["metadata"]
    pack = prices["creditline_pack_500"]
    assert pack["recurring"] is None
    assert pack["metadata"] == {
        "includedCredits": "500",
        "creditline_id": "pack_500",
        "creditline_kind": "package",
    }


def test_a_second_push_posts_nothing_to_stripe(
    ctx: AppContext, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    first = push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    before = len(fake_stripe.requests)
    lines: list[str] = []

    second = push_catalog(ctx.db, stripe_client, None, ctx.clock, lines.append)

    assert posts(fake_stripe, before) == []
    assert len(second.unchanged) == DEFAULT_ITEMS
    assert [i.price_id for i in second.items] == [i.price_id for i in first.items]
    assert all(line.startswith("unchanged price") for line in lines)
    assert len(fake_stripe.objects("price")) == DEFAULT_ITEMS


def test_a_changed_price_is_replaced_and_the_old_one_deactivated(
    ctx: AppContext,
    stripe_client: stripe.StripeClient,
    fake_stripe: FakeStripe,
    tmp_path: Path,
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    old_id = catalog_in_db(ctx)["pro_monthly"].stripe_price_id
    document = default_document()
    entry(document, "pro_monthly")["unit_amount"] = 4900
    before = len(fake_stripe.requests)
    lines: list[str] = []

    report = push_catalog(
        ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, lines.append
    )

    (replaced,) = report.updated
    assert (replaced.item_id, replaced.price, replaced.product) == (
        "pro_monthly",
        Change.UPDATED,
        Change.UNCHANGED,
    )
    assert replaced.replaced_price_id == old_id
    assert len(report.unchanged) == DEFAULT_ITEMS - 1
    assert posts(fake_stripe, before) == ["POST /v1/prices", f"POST /v1/prices/{old_id}"]
    create, deactivate = [r for r in fake_stripe.requests[before:] if r.method == "POST"]
    assert create.params["transfer_lookup_key"] == "true"
    assert create.params["lookup_key"] == "creditline_pro_monthly"
    assert deactivate.params == {"active": "false"}
    old, new = fake_stripe.object(old_id), fake_stripe.object(replaced.price_id)
    assert (old["active"], old["lookup_key"]) == (False, None)
    assert (new["active"], new["lookup_key"], new["unit_amount"]) == (
        True,
        "creditline_pro_monthly",
        4900,
    )
    in_db = catalog_in_db(ctx)["pro_monthly"]
    assert (in_db.stripe_price_id, in_db.unit_amount) == (replaced.price_id, 4900)
    assert f"replaced price {old_id} with {replaced.price_id}" in lines[4]
    assert "unit_amount 3900 -> 4900" in lines[4]
    # Subscriptions still on the old price (until they renew) still find their plan.
    for price_id in (old_id, replaced.price_id):
        found = ctx.db.read(lambda tx, p=price_id: tx.catalog.by_stripe_price(p))
        assert found is not None and found.id == "pro_monthly"

    # And now the file and Stripe agree again.
    before = len(fake_stripe.requests)
    again = push_catalog(ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, quiet)
    assert posts(fake_stripe, before) == []
    assert len(again.unchanged) == DEFAULT_ITEMS


def test_a_changed_renewal_policy_replaces_the_price_and_a_new_name_renames_the_product(
    ctx: AppContext,
    stripe_client: stripe.StripeClient,
    fake_stripe: FakeStripe,
    tmp_path: Path,
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    document = default_document()
    entry(document, "creator_yearly")["rollover_cap"] = "1500"
    entry(document, "pack_100")["name"] = "Starter pack"
    before = len(fake_stripe.requests)

    report = push_catalog(
        ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, quiet
    )

    changed = {item.item_id: item for item in report.updated}
    assert set(changed) == {"pack_100", "creator_yearly"}
    assert (changed["pack_100"].product, changed["pack_100"].price) == (
        Change.UPDATED,
        Change.UNCHANGED,
    )
    assert changed["creator_yearly"].price is Change.UPDATED
    assert fake_stripe.object("creditline_pack_100")["name"] == "Starter pack"
    assert fake_stripe.object(changed["creator_yearly"].price_id)["metadata"]["rolloverCap"] == (
        "1500"
    )
    assert sorted(posts(fake_stripe, before)) == sorted(
        [
            "POST /v1/products/creditline_pack_100",
            "POST /v1/prices",
            f"POST /v1/prices/{changed['creator_yearly'].replaced_price_id}",
        ]
    )


def test_pull_into_an_empty_database_reproduces_the_catalog(
    ctx: AppContext, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    pushed = push(stripe_client, read(DEFAULT_PATH), progress=quiet)
    ids = {item.item_id: (item.product_id, item.price_id) for item in pushed.items}
    assert catalog_in_db(ctx) == {}
    lines: list[str] = []

    pulled = pull_catalog(ctx.db, stripe_client, ctx.clock, lines.append)

    expected = {
        item.id: replace(item, stripe_product_id=ids[item.id][0], stripe_price_id=ids[item.id][1])
        for item in read(DEFAULT_PATH)
    }
    assert {item.id: item for item in pulled} == expected
    assert catalog_in_db(ctx) == expected
    assert len(lines) == DEFAULT_ITEMS
    assert lines[0] == f"pulled price {ids['pack_100'][1]} as package pack_100"


def test_pull_skips_prices_that_are_not_catalog_items(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    push(
        stripe_client,
        [item for item in read(DEFAULT_PATH) if item.id == "pack_100"],
        progress=quiet,
    )
    product = stripe_client.v1.products.create(params={"name": "Other"})
    stripe_client.v1.prices.create(
        params={"product": product.id, "unit_amount": 700, "currency": "usd"}
    )
    weekly = stripe_client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 700,
            "currency": "usd",
            "recurring": {"interval": "week"},
            "lookup_key": "weekly",
            "metadata": {"includedCredits": "10"},
        }
    )
    bad = stripe_client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 900,
            "currency": "usd",
            "lookup_key": "bad_credits",
            "metadata": {"includedCredits": "ten"},
        }
    )
    lines: list[str] = []

    pulled = pull(stripe_client, progress=lines.append)

    assert [item.id for item in pulled] == ["pack_100"]
    assert f"skipped price {weekly.id}: recurring must be every month or every year" in lines
    assert any(
        line.startswith(f"skipped price {bad.id}: metadata.includedCredits") for line in lines
    )


def test_pull_prefers_the_price_holding_the_lookup_key_when_two_claim_an_item(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    (pushed,) = push(
        stripe_client,
        [item for item in read(DEFAULT_PATH) if item.id == "pack_100"],
        progress=quiet,
    ).items
    # A stray active price for the same item, e.g. left by a push interrupted mid-replacement.
    stray = stripe_client.v1.prices.create(
        params={
            "product": pushed.product_id,
            "unit_amount": 90,
            "currency": "usd",
            "metadata": {"includedCredits": "100", "creditline_id": "pack_100"},
        }
    )
    lines: list[str] = []

    (item,) = pull(stripe_client, progress=lines.append)

    assert (item.id, item.stripe_price_id, item.unit_amount) == ("pack_100", pushed.price_id, 100)
    assert f"skipped price {stray.id}: package pack_100 is already sold at price" in lines[0]


def test_pull_names_items_by_lookup_key_and_reads_plan_metadata(
    stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    product = stripe_client.v1.products.create(params={"name": "Team"})
    price = stripe_client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 5000,
            "currency": "eur",
            "recurring": {"interval": "month"},
            "lookup_key": "team_monthly",
            "metadata": {"includedCredits": "750.5", "renewalPolicy": "ROLLOVER"},
        }
    )

    (plan,) = pull(stripe_client, progress=quiet)

    assert isinstance(plan, Plan)
    assert (plan.id, plan.name, plan.lookup_key, plan.currency) == (
        "team_monthly",
        "Team",
        "team_monthly",
        "eur",
    )
    assert plan.monthly_credits == 750_500_000
    assert (plan.renewal_policy.value, plan.rollover_cap) == ("ROLLOVER", None)
    assert (plan.stripe_product_id, plan.stripe_price_id) == (product.id, price.id)


def test_a_bad_file_writes_nothing_and_calls_stripe_not_at_all(
    ctx: AppContext,
    engine: Engine,
    stripe_client: stripe.StripeClient,
    fake_stripe: FakeStripe,
    tmp_path: Path,
) -> None:
    document = default_document()
    document["plans"][3]["unit_amount"] = "20000"

    with pytest.raises(CatalogFileError, match=r"plans\[3\]\.unit_amount"):
        push_catalog(ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, quiet)

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(catalog_items)).scalar_one() == 0
    assert fake_stripe.requests == []


def test_push_and_pull_without_stripe_refuse(ctx: AppContext) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        push_catalog(ctx.db, None, None, ctx.clock, quiet)
    assert caught.value.reason == "STRIPE_NOT_CONFIGURED"
    with pytest.raises(FailedPrecondition):
        pull_catalog(ctx.db, None, ctx.clock, quiet)
    assert catalog_in_db(ctx) == {}


def test_a_lookup_key_held_by_another_item_is_refused_by_name(
    ctx: AppContext,
    stripe_client: stripe.StripeClient,
    fake_stripe: FakeStripe,
    tmp_path: Path,
) -> None:
    seed_default_catalog(ctx.db, ctx.clock)
    document = {"packages": [{**entry(default_document(), "pack_100"), "id": "pack_hundred"}]}

    with pytest.raises(FailedPrecondition) as caught:
        push_catalog(ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, quiet)

    assert caught.value.reason == "CATALOG_LOOKUP_KEY_TAKEN"
    assert "'pack_100'" in caught.value.message
    assert fake_stripe.requests == []


def test_seed_loads_the_default_catalog_once(
    ctx: AppContext, stripe_client: stripe.StripeClient
) -> None:
    assert seed_default_catalog(ctx.db, ctx.clock) is True
    seeded = catalog_in_db(ctx)
    assert len(seeded) == DEFAULT_ITEMS
    assert all(not item.stripe_price_id for item in seeded.values())
    assert isinstance(seeded["pack_100"], CreditPackage)

    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    pushed = catalog_in_db(ctx)

    assert seed_default_catalog(ctx.db, ctx.clock) is False
    assert catalog_in_db(ctx) == pushed
    assert all(item.stripe_price_id for item in pushed.values())


def test_a_push_that_stripe_fails_leaves_the_database_as_it_was(
    ctx: AppContext,
    stripe_client: stripe.StripeClient,
    fake_stripe: FakeStripe,
    tmp_path: Path,
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    before = catalog_in_db(ctx)
    document = default_document()
    entry(document, "pack_500")["credits"] = "1000"
    entry(document, "pack_500")["unit_amount"] = 10000
    fake_stripe.stop()

    with pytest.raises(StripeUnavailable):
        push_catalog(ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, quiet)

    # Checkout still sells the old price, so a purchase must still grant the old credits.
    assert catalog_in_db(ctx) == before


def test_a_push_cut_off_before_deactivating_the_old_price_is_finished_by_the_next(
    ctx: AppContext, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe, tmp_path: Path
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    old_id = catalog_in_db(ctx)["pack_500"].stripe_price_id
    document = default_document()
    entry(document, "pack_500")["unit_amount"] = 600
    path = write_catalog(tmp_path, document)
    # A push of that change got as far as creating the replacement (which took the lookup key)
    # and was stopped before it deactivated the old price or wrote the database.
    old = fake_stripe.object(old_id)
    replacement = stripe_client.v1.prices.create(
        params={
            "product": old["product"],
            "unit_amount": 600,
            "currency": old["currency"],
            "nickname": old["nickname"],
            "lookup_key": old["lookup_key"],
            "transfer_lookup_key": True,
            "metadata": old["metadata"],
        }
    )
    assert fake_stripe.object(old_id)["active"] is True  # still on sale
    lines: list[str] = []

    report = push_catalog(ctx.db, stripe_client, path, ctx.clock, lines.append)

    (item,) = [i for i in report.items if i.item_id == "pack_500"]
    assert item.price_id == replacement.id
    assert fake_stripe.object(old_id)["active"] is False
    assert fake_stripe.object(replacement.id)["active"] is True
    assert f"deactivated stray price {old_id} of package pack_500" in "\n".join(lines)
    assert catalog_in_db(ctx)["pack_500"].stripe_price_id == replacement.id
    active = [p for p in fake_stripe.objects("price") if p["active"]]
    assert len(active) == DEFAULT_ITEMS  # one on sale per item


def test_creating_a_price_is_idempotent_per_change_and_per_price_replaced(
    ctx: AppContext, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe, tmp_path: Path
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    document = default_document()
    entry(document, "pack_500")["unit_amount"] = 600
    before = len(fake_stripe.requests)
    first = push_catalog(ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, quiet)
    (create,) = [
        r for r in fake_stripe.requests[before:] if (r.method, r.path) == ("POST", "/v1/prices")
    ]
    assert create.idempotency_key and create.idempotency_key.startswith("creditline-price:")
    (changed,) = first.updated
    # A price Stripe made just now (no Idempotent-Replayed header) is not read back.
    reads = [(r.method, r.path) for r in fake_stripe.requests[before:]]
    assert ("GET", f"/v1/prices/{changed.price_id}") not in reads

    # The same request again (a push retried after a lost answer) gets the same price back.
    again = stripe_client.v1.prices.create(
        params=fake_stripe_params(create.params),
        options={"idempotency_key": create.idempotency_key},
    )
    assert again.id == changed.price_id

    # Undo the change: the replacement has its own key (it replaces another price), so it is
    # a new price, not a replay of the original, now deactivated one.
    restored = push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    (undone,) = restored.updated
    assert undone.price_id not in (changed.price_id, changed.replaced_price_id)
    assert fake_stripe.object(undone.price_id)["active"] is True


def fake_stripe_params(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded create's form params (strings, bracketed keys) as the client's params."""
    params: dict[str, Any] = {"metadata": {}}
    for key, value in recorded.items():
        if key.startswith("metadata["):
            params["metadata"][key[len("metadata[") : -1]] = value
        elif key == "transfer_lookup_key":
            params[key] = value == "true"
        elif key == "unit_amount":
            params[key] = int(value)
        else:
            params[key] = value
    return params


def test_a_price_added_by_hand_to_an_items_product_is_left_on_sale(
    ctx: AppContext, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    ours = fake_stripe.object(catalog_in_db(ctx)["pack_500"].stripe_price_id)
    euro = stripe_client.v1.prices.create(
        params={"product": ours["product"], "unit_amount": 450, "currency": "eur"}
    )

    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)

    assert fake_stripe.object(euro.id)["active"] is True  # not push's price: not push's to retire


def test_a_push_whose_price_lost_its_key_meanwhile_writes_nothing(
    ctx: AppContext, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe, tmp_path: Path
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    before = catalog_in_db(ctx)
    document = default_document()
    entry(document, "pack_500")["unit_amount"] = 600
    taken: list[str] = []

    def meanwhile(line: str) -> None:
        # Another push, of another catalog, replaces pack_500's price right after this one.
        if "pack_500" in line and not taken:
            ours = fake_stripe.object(fake_stripe.objects("price")[0]["id"])
            rival = stripe_client.v1.prices.create(
                params={
                    "product": "creditline_pack_500",
                    "unit_amount": 700,
                    "currency": ours["currency"],
                    "lookup_key": "creditline_pack_500",
                    "transfer_lookup_key": True,
                    "metadata": {"creditline_id": "pack_500"},
                }
            )
            taken.append(rival.id)

    with pytest.raises(FailedPrecondition) as raced:
        push_catalog(ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, meanwhile)

    assert raced.value.reason == "CATALOG_PUSH_RACED"
    assert catalog_in_db(ctx) == before  # never pointed at a price that is not on sale


def test_a_replayed_create_of_a_price_archived_by_hand_makes_a_fresh_price(
    ctx: AppContext, stripe_client: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    archived = catalog_in_db(ctx)["pack_500"].stripe_price_id
    # Someone archives the price in the dashboard and clears its lookup key, within the 24
    # hours in which Stripe would replay the create that made it.
    stripe_client.v1.prices.update(archived, params={"active": False, "lookup_key": ""})

    report = push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)

    (item,) = [i for i in report.items if i.item_id == "pack_500"]
    assert item.price_id != archived
    assert fake_stripe.object(item.price_id)["active"] is True
    assert catalog_in_db(ctx)["pack_500"].stripe_price_id == item.price_id


class HeldAfterFirstItem:
    """Progress that holds its push after the first item until `release` is set."""

    def __init__(self) -> None:
        self.holding, self.release = threading.Event(), threading.Event()

    def __call__(self, _line: str) -> None:
        if not self.holding.is_set():
            self.holding.set()
            assert self.release.wait(30)


class SaysItWaits:
    """Progress that notes when its push or pull says it waits for another."""

    def __init__(self) -> None:
        self.waits = threading.Event()

    def __call__(self, line: str) -> None:
        if line.startswith("waiting for another catalog push"):
            self.waits.set()


def test_pushes_take_turns_so_the_database_names_the_price_on_sale(
    ctx: AppContext, stripe_client: stripe.StripeClient, tmp_path: Path
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    dearer, dearest = default_document(), default_document()
    entry(dearer, "pack_500")["unit_amount"] = 600
    entry(dearest, "pack_500")["unit_amount"] = 700
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = HeldAfterFirstItem(), SaysItWaits()

    with ThreadPoolExecutor(2) as pool:
        first_push = pool.submit(
            push_catalog,
            ctx.db,
            stripe_client,
            write_catalog(tmp_path / "a", dearer),
            ctx.clock,
            first,
        )
        assert first.holding.wait(30)
        second_push = pool.submit(
            push_catalog,
            ctx.db,
            stripe_client,
            write_catalog(tmp_path / "b", dearest),
            ctx.clock,
            second,
        )
        # Had the second gone ahead, whichever wrote the database last could point it at a
        # price the other had already replaced.
        assert second.waits.wait(30), "the second push did not wait for the first"
        first.release.set()
        first_push.result(timeout=60)
        second_push.result(timeout=60)

    (on_sale,) = stripe_client.v1.prices.list(
        params={"lookup_keys": ["creditline_pack_500"], "limit": 10}
    ).data
    recorded = catalog_in_db(ctx)["pack_500"]
    assert on_sale.active and on_sale.unit_amount == 700
    assert (recorded.stripe_price_id, recorded.unit_amount) == (on_sale.id, 700)


def test_a_pull_waits_for_a_push_in_progress(
    ctx: AppContext, stripe_client: stripe.StripeClient
) -> None:
    push, pull = HeldAfterFirstItem(), SaysItWaits()

    with ThreadPoolExecutor(2) as pool:
        pushed = pool.submit(push_catalog, ctx.db, stripe_client, None, ctx.clock, push)
        assert push.holding.wait(30)
        pulled = pool.submit(pull_catalog, ctx.db, stripe_client, ctx.clock, pull)
        assert pull.waits.wait(30), "the pull did not wait for the push"
        push.release.set()
        pushed.result(timeout=60)
        # The pull read Stripe after the push finished: every item, not the first alone.
        assert len(pulled.result(timeout=60)) == DEFAULT_ITEMS


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_push_whose_lock_was_cut_off_writes_nothing(
    ctx: AppContext, stripe_client: stripe.StripeClient, tmp_path: Path
) -> None:
    push_catalog(ctx.db, stripe_client, None, ctx.clock, quiet)
    before = catalog_in_db(ctx)
    document = default_document()
    entry(document, "pack_500")["unit_amount"] = 600
    url = ctx.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    cut: list[int] = []

    def cut_the_lock(_line: str) -> None:
        # Mid-push, the server drops the lock's connection (an idle timeout, a failover), and
        # with it the lock: another push could start now.
        if not cut:
            with psycopg.connect(url, autocommit=True) as admin:
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                    "'advisory' AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                )
                cut.extend(row[0] for row in rows)

    with pytest.raises(FailedPrecondition) as lost:
        push_catalog(
            ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, cut_the_lock
        )

    assert cut == [True]
    assert lost.value.reason == "LOCK_LOST"
    assert catalog_in_db(ctx) == before
    # The next push runs (the pool let go of the dead connection) and finishes the job.
    push_catalog(ctx.db, stripe_client, write_catalog(tmp_path, document), ctx.clock, quiet)
    assert catalog_in_db(ctx)["pack_500"].unit_amount == 600
