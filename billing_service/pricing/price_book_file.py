"""Price book files (JSON or YAML): read and validated whole, or written from a version.

A file is refused whole at the first problem, naming the line (for syntax) or the key path
such as `models[3].input_per_mtok` (for content), so nothing of a bad file is ever loaded.

    {"credit_usd": "0.001", "markup": "0",
     "tiers": [{"name": "TIER_1A", "base_fee": "10", "fee_unit": "scenario", "description": ""}],
     "models": [{"provider": "openai", "model": "gpt-4o", "input_per_mtok": "2.50", ...,
                 "unit": null, "source": "https://…", "as_of": "2026-05-01"}]}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from billing_service.db.codec import decimal_text
from billing_service.domain.amounts import format_amount, parse_amount
from billing_service.domain.errors import InvalidField
from billing_service.domain.price_rules import (
    check_credit_value,
    check_model_price,
    check_tier,
    parse_usd,
)
from billing_service.domain.pricing import PRICE_FIELDS, ModelPrice, PriceBook, Tier

DEFAULT_PATH = Path(__file__).with_name("default_price_book.json")

MODEL_KEYS = frozenset({"provider", "model", *PRICE_FIELDS, "unit", "source", "as_of"})
TIER_KEYS = frozenset({"name", "base_fee", "fee_unit", "description"})
_TOP = "(top level)"
TOP_KEYS = frozenset({"credit_usd", "markup", "tiers", "models", "note"})


class PriceBookFileError(ValueError):
    """The file cannot be loaded; the message names the line or key."""


def read(path: Path, *, effective_at: datetime | None = None) -> PriceBook:
    """Parse and validate a price book file into an unnumbered version (version 0)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PriceBookFileError(f"{path}: cannot read: {error}") from error
    return parse(
        text, name=str(path), yaml_syntax=path.suffix in (".yaml", ".yml"), at=effective_at
    )


def parse(text: str, *, name: str, yaml_syntax: bool, at: datetime | None = None) -> PriceBook:
    """Parse price book text (JSON, or YAML when yaml_syntax) and validate every entry."""
    document = _load(text, name, yaml_syntax)
    try:
        return _book(document, at or datetime(1970, 1, 1, tzinfo=UTC))
    except InvalidField as error:
        raise PriceBookFileError(f"{name}: {error.field}: {error.problem}") from error


def to_document(book: PriceBook) -> dict[str, Any]:
    """A version as the file structure (what `export` writes and `load` reads back)."""
    return {
        "credit_usd": decimal_text(book.credit_usd),
        "markup": decimal_text(book.markup),
        "note": book.note,
        "tiers": [
            {
                "name": t.name,
                "base_fee": format_amount(t.base_fee),
                "fee_unit": t.fee_unit,
                "description": t.description,
            }
            for t in book.tiers
        ],
        "models": [
            {
                "provider": m.provider,
                "model": m.model,
                **{k: _price_text(getattr(m, k)) for k in PRICE_FIELDS},
                "unit": m.unit or None,
                "source": m.source,
                "as_of": m.as_of,
            }
            for m in book.models
        ],
    }


def dump(book: PriceBook, *, yaml_syntax: bool) -> str:
    """A version as file text."""
    document = to_document(book)
    if yaml_syntax:
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return json.dumps(document, indent=2) + "\n"


def _price_text(value: Decimal | None) -> str | None:
    return None if value is None else decimal_text(value)


def _load(text: str, name: str, yaml_syntax: bool) -> Any:
    if yaml_syntax:
        try:
            # YAML would turn 2.50 into a float; prices must stay exact, so numbers are refused
            # below and must be quoted.
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "?"
            raise PriceBookFileError(f"{name}: {where}: not valid YAML: {error}") from error
    try:
        # Numbers parse exactly and are then refused by key path: amounts must be quoted strings.
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}"
        raise PriceBookFileError(f"{name}: {where}: not valid JSON: {error.msg}") from error


def _book(document: Any, at: datetime) -> PriceBook:
    _require_map(document, _TOP, TOP_KEYS)
    credit_usd = parse_usd(_text(document, "credit_usd", "credit_usd", required=True), "credit_usd")
    markup = parse_usd(_text(document, "markup", "markup") or "0", "markup")
    check_credit_value(credit_usd, markup)
    tiers_doc = document.get("tiers", [])
    models_doc = document.get("models")
    if not isinstance(tiers_doc, list):
        raise InvalidField("tiers", "must be a list")
    if not isinstance(models_doc, list) or not models_doc:
        raise InvalidField("models", "must be a non-empty list")
    tiers = [_tier(t, f"tiers[{i}]") for i, t in enumerate(tiers_doc)]
    models = [_model(m, f"models[{i}]") for i, m in enumerate(models_doc)]
    seen: set[tuple[str, str]] = set()
    for i, m in enumerate(models):
        if (m.provider, m.model) in seen:
            raise InvalidField(f"models[{i}]", f"repeats {m.provider}/{m.model}")
        seen.add((m.provider, m.model))
    names = [t.name for t in tiers]
    for i, tier_name in enumerate(names):
        if names.index(tier_name) != i:
            raise InvalidField(f"tiers[{i}].name", f"repeats {tier_name}")
    assert credit_usd is not None and markup is not None
    return PriceBook(
        version=0,
        effective_at=at,
        credit_usd=credit_usd,
        markup=markup,
        note=str(document.get("note") or ""),
        created_at=at,
        models=tuple(sorted(models, key=lambda m: (m.provider, m.model))),
        tiers=tuple(sorted(tiers, key=lambda t: t.name)),
    )


def _model(entry: Any, where: str) -> ModelPrice:
    _require_map(entry, where, MODEL_KEYS)
    prices: dict[str, Decimal | None] = {
        key: parse_usd(_text(entry, key, f"{where}.{key}"), f"{where}.{key}")
        for key in PRICE_FIELDS
    }
    price = ModelPrice(
        provider=_text(entry, "provider", f"{where}.provider", required=True) or "",
        model=_text(entry, "model", f"{where}.model", required=True) or "",
        unit=_text(entry, "unit", f"{where}.unit") or "",
        source=_text(entry, "source", f"{where}.source") or "",
        as_of=_text(entry, "as_of", f"{where}.as_of") or "",
        **prices,
    )
    return check_model_price(price, where)


def _tier(entry: Any, where: str) -> Tier:
    _require_map(entry, where, TIER_KEYS)
    fee = _text(entry, "base_fee", f"{where}.base_fee", required=True) or ""
    tier = Tier(
        name=_text(entry, "name", f"{where}.name", required=True) or "",
        base_fee=parse_amount(fee, f"{where}.base_fee", allow_zero=True),
        fee_unit=_text(entry, "fee_unit", f"{where}.fee_unit") or "",
        description=_text(entry, "description", f"{where}.description") or "",
    )
    return check_tier(tier, where)


def _require_map(value: Any, where: str, allowed: frozenset[str]) -> None:
    if not isinstance(value, dict):
        raise InvalidField(where, "must be a mapping of keys to values")
    unknown = sorted(set(value) - allowed)
    if unknown:
        path = unknown[0] if where == _TOP else f"{where}.{unknown[0]}"
        raise InvalidField(path, "is not a known key")


def _text(entry: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise InvalidField(where, "is required")
        return None
    if not isinstance(value, str):
        shown = format(value, "f") if isinstance(value, Decimal) else repr(value)
        raise InvalidField(where, f"must be a quoted decimal string, got the bare value {shown}")
    return value
