"""Catalog files: the shipped default holds 3 packages and 4 plans paid monthly or yearly (a
year at ten months' price, the same monthly credits); JSON and YAML parse alike; and every kind
of bad file is refused whole, naming the offending line or key path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from billing_service.catalog.catalog_file import DEFAULT_PATH, CatalogFileError, parse, read
from billing_service.domain.amounts import MICROS_PER_CREDIT
from billing_service.domain.catalog import CreditPackage, Interval, Plan, RenewalPolicy

PACKAGE: dict[str, Any] = {
    "id": "pack_100",
    "name": "100 credits",
    "credits": "100",
    "unit_amount": 100,
    "currency": "usd",
    "lookup_key": "creditline_pack_100",
}
PLAN: dict[str, Any] = {
    "id": "pro_monthly",
    "name": "Pro (monthly)",
    "interval": "MONTH",
    "monthly_credits": "400",
    "unit_amount": 3900,
    "currency": "usd",
    "renewal_policy": "ROLLOVER",
    "rollover_cap": "400",
    "lookup_key": "creditline_pro_monthly",
}
OTHER_PLAN: dict[str, Any] = {
    **PLAN,
    "id": "pro_yearly",
    "interval": "YEAR",
    "unit_amount": 39000,
    "lookup_key": "creditline_pro_yearly",
}


def document() -> dict[str, Any]:
    return copy.deepcopy({"packages": [PACKAGE], "plans": [PLAN, OTHER_PLAN]})


def refusal(text: str, *, yaml_syntax: bool = False) -> str:
    with pytest.raises(CatalogFileError) as caught:
        parse(text, name="catalog", yaml_syntax=yaml_syntax)
    return str(caught.value)


def refusal_of(doc: Any) -> str:
    return refusal(json.dumps(doc))


# --- the shipped default ----------------------------------------------------------------------


def test_default_catalog_holds_three_packages_and_four_plans_monthly_and_yearly() -> None:
    items = read(DEFAULT_PATH)
    packages = [item for item in items if isinstance(item, CreditPackage)]
    plans = {item.id: item for item in items if isinstance(item, Plan)}

    # 1000 credits = $10: 100 credits cost $1 (100 cents).
    assert [(p.id, p.credits // MICROS_PER_CREDIT, p.unit_amount) for p in packages] == [
        ("pack_100", 100, 100),
        ("pack_500", 500, 500),
        ("pack_2000", 2000, 2000),
    ]
    assert len(plans) == 8
    expected = {
        "starter": (2000, 200, RenewalPolicy.RESET, None),
        "pro": (3900, 400, RenewalPolicy.ROLLOVER, 400),
        "creator": (9900, 1000, RenewalPolicy.ROLLOVER, 1000),
        "ultimate": (20000, 2000, RenewalPolicy.ADD, None),
    }
    for tier, (monthly_cents, credits, policy, cap) in expected.items():
        monthly, yearly = plans[f"{tier}_monthly"], plans[f"{tier}_yearly"]
        assert (monthly.interval, yearly.interval) == (Interval.MONTH, Interval.YEAR)
        assert monthly.unit_amount == monthly_cents
        assert yearly.unit_amount == 10 * monthly.unit_amount
        for plan in (monthly, yearly):
            assert plan.monthly_credits == credits * MICROS_PER_CREDIT
            assert plan.renewal_policy is policy
            assert plan.rollover_cap == (None if cap is None else cap * MICROS_PER_CREDIT)
            assert plan.currency == "usd"
            assert plan.lookup_key == f"creditline_{plan.id}"
            assert not plan.stripe_price_id


def test_default_catalog_ids_and_lookup_keys_are_unique() -> None:
    items = read(DEFAULT_PATH)
    assert len({item.id for item in items}) == len(items) == 11
    assert len({item.lookup_key for item in items}) == len(items)


# --- good files -------------------------------------------------------------------------------


def test_json_and_yaml_parse_to_the_same_items(tmp_path: Path) -> None:
    doc = document()
    as_json = tmp_path / "catalog.json"
    as_yaml = tmp_path / "catalog.yaml"
    as_json.write_text(json.dumps(doc))
    as_yaml.write_text(yaml.safe_dump(doc))

    items = read(as_json)

    assert read(as_yaml) == items
    assert items[0] == CreditPackage(
        id="pack_100",
        name="100 credits",
        credits=100 * MICROS_PER_CREDIT,
        unit_amount=100,
        currency="usd",
        lookup_key="creditline_pack_100",
    )
    assert items[1] == Plan(
        id="pro_monthly",
        name="Pro (monthly)",
        interval=Interval.MONTH,
        monthly_credits=400 * MICROS_PER_CREDIT,
        unit_amount=3900,
        currency="usd",
        renewal_policy=RenewalPolicy.ROLLOVER,
        rollover_cap=400 * MICROS_PER_CREDIT,
        lookup_key="creditline_pro_monthly",
    )


def test_fractional_credits_are_exact_and_cap_and_lists_are_optional() -> None:
    doc = {"packages": [{**PACKAGE, "credits": "12.345678"}]}
    (package,) = parse(json.dumps(doc), name="catalog", yaml_syntax=False)
    assert isinstance(package, CreditPackage)
    assert package.credits == 12_345_678

    plan_doc = {k: v for k, v in PLAN.items() if k != "rollover_cap"}
    (plan,) = parse(json.dumps({"plans": [plan_doc]}), name="catalog", yaml_syntax=False)
    assert isinstance(plan, Plan)
    assert plan.rollover_cap is None


# --- bad files --------------------------------------------------------------------------------


def test_syntax_errors_name_the_line() -> None:
    assert "catalog: line 3: not valid JSON" in refusal('{\n"packages": [\n  {,}\n]}')
    assert "catalog: line 2: not valid YAML" in refusal(
        "packages: []\nplans: a: b\n", yaml_syntax=True
    )


def test_a_repeated_key_in_one_object_is_refused() -> None:
    text = '{"packages": [], "packages": []}'
    assert "'packages' appears twice" in refusal(text)


def test_empty_or_wrongly_shaped_files_are_refused() -> None:
    assert "(top level): must be a mapping" in refusal_of([PACKAGE])
    assert "(top level): lists no packages and no plans" in refusal_of({"packages": []})
    assert "plans: must be a list" in refusal_of({"plans": PLAN})
    assert "packages[0]: must be a mapping" in refusal_of({"packages": ["pack_100"]})


@pytest.mark.parametrize(
    ("section", "index", "change", "expected"),
    [
        ("packages", 0, {"price": 5}, "packages[0].price: is not a known key"),
        ("plans", 1, {"trial_days": 7}, "plans[1].trial_days: is not a known key"),
        ("packages", 0, {"credits": 100}, "packages[0].credits: must be a quoted decimal"),
        ("packages", 0, {"credits": "1e3"}, "packages[0].credits: must be a plain decimal"),
        ("packages", 0, {"credits": "0"}, "packages[0].credits: must be greater than zero"),
        ("packages", 0, {"credits": "0.0000001"}, "packages[0].credits: must be a plain"),
        ("plans", 0, {"monthly_credits": None}, "plans[0].monthly_credits: is required"),
        ("plans", 1, {"unit_amount": "3900"}, "plans[1].unit_amount: must be a whole number"),
        ("plans", 1, {"unit_amount": 39.5}, "plans[1].unit_amount: must be a whole number"),
        ("plans", 1, {"unit_amount": True}, "plans[1].unit_amount: must be a whole number"),
        ("plans", 1, {"unit_amount": 0}, "plans[1].unit_amount: must be 1 to"),
        ("plans", 1, {"unit_amount": 100_000_000}, "plans[1].unit_amount: must be 1 to"),
        ("plans", 0, {"interval": "WEEK"}, "plans[0].interval: must be one of MONTH, YEAR"),
        ("plans", 0, {"renewal_policy": "keep"}, "plans[0].renewal_policy: must be one of"),
        ("plans", 0, {"rollover_cap": 400}, "plans[0].rollover_cap: must be a quoted decimal"),
        (
            "plans",
            0,
            {"renewal_policy": "ADD"},
            "plans[0].rollover_cap: applies only to ROLLOVER plans",
        ),
        ("packages", 0, {"currency": "USD"}, "packages[0].currency: must be a lower-case ISO"),
        ("packages", 0, {"id": "Pack 100"}, "packages[0].id: must be 1-64 of"),
        ("packages", 0, {"name": " "}, "packages[0].name: must be 1-200 characters"),
        ("packages", 0, {"name": 100}, "packages[0].name: must be a string"),
        ("plans", 1, {"lookup_key": "has space"}, "plans[1].lookup_key: must be 1-200 of"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key_path(
    section: str, index: int, change: dict[str, Any], expected: str
) -> None:
    doc = document()
    doc[section][index].update(change)
    assert f"catalog: {expected}" in refusal_of(doc)


def test_unknown_top_level_key_is_refused() -> None:
    doc = {**document(), "coupons": []}
    assert "catalog: coupons: is not a known key" in refusal_of(doc)


def test_repeated_ids_and_lookup_keys_are_refused_naming_the_repeat() -> None:
    same_id = document()
    same_id["plans"][1]["id"] = "pro_monthly"
    assert "plans[1].id: repeats 'pro_monthly'" in refusal_of(same_id)

    # Ids are unique across packages and plans: they share one table.
    across = document()
    across["plans"][0]["id"] = "pack_100"
    assert "plans[0].id: repeats 'pack_100'" in refusal_of(across)

    same_key = document()
    same_key["plans"][1]["lookup_key"] = "creditline_pack_100"
    assert "plans[1].lookup_key: repeats 'creditline_pack_100'" in refusal_of(same_key)


def test_yaml_numbers_for_credits_must_be_quoted() -> None:
    text = yaml.safe_dump({"packages": [{**PACKAGE, "credits": 2.5}]})
    assert "packages[0].credits: must be a quoted decimal string" in refusal(text, yaml_syntax=True)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogFileError, match="cannot read"):
        read(tmp_path / "missing.json")
