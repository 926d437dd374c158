"""Catalog files (JSON, or YAML by suffix): credit packages and plans, read and validated whole.

A file is refused whole at the first problem, naming the line (for syntax) or the key path such
as `plans[2].unit_amount` (for content), so nothing of a bad file is ever loaded or pushed.

    {"packages": [{"id": "pack_100", "name": "100 credits", "credits": "100",
                   "unit_amount": 100, "currency": "usd", "lookup_key": "creditline_pack_100"}],
     "plans": [{"id": "starter_monthly", "name": "Starter (monthly)", "interval": "MONTH",
                "monthly_credits": "200", "unit_amount": 2000, "currency": "usd",
                "renewal_policy": "RESET", "rollover_cap": null,
                "lookup_key": "creditline_starter_monthly"}]}

Credits are quoted decimal strings (exact, like every amount); `unit_amount` is a whole number
of minor units (cents), as Stripe counts prices. Ids and lookup keys are unique across the file.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import yaml

from billing_service.domain.amounts import parse_amount
from billing_service.domain.catalog import (
    CatalogItem,
    CreditPackage,
    Interval,
    Plan,
    RenewalPolicy,
    check_item,
)
from billing_service.domain.errors import InvalidField

_Choice = TypeVar("_Choice", Interval, RenewalPolicy)

DEFAULT_PATH = Path(__file__).with_name("default_catalog.json")

_TOP = "(top level)"
TOP_KEYS = frozenset({"packages", "plans"})
PACKAGE_KEYS = frozenset({"id", "name", "credits", "unit_amount", "currency", "lookup_key"})
PLAN_KEYS = frozenset(
    {
        "id",
        "name",
        "interval",
        "monthly_credits",
        "unit_amount",
        "currency",
        "renewal_policy",
        "rollover_cap",
        "lookup_key",
    }
)


class CatalogFileError(ValueError):
    """The file cannot be loaded; the message names the line or key."""


def read(path: Path) -> list[CatalogItem]:
    """Parse and validate a catalog file: YAML for .yaml/.yml, JSON otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CatalogFileError(f"{path}: cannot read: {error}") from error
    return parse(text, name=str(path), yaml_syntax=path.suffix in (".yaml", ".yml"))


def parse(text: str, *, name: str, yaml_syntax: bool) -> list[CatalogItem]:
    """Parse catalog text (JSON, or YAML when yaml_syntax): packages first, then plans."""
    document = _load(text, name, yaml_syntax)
    try:
        return _catalog(document)
    except InvalidField as error:
        raise CatalogFileError(f"{name}: {error.field}: {error.problem}") from error


def _load(text: str, name: str, yaml_syntax: bool) -> Any:
    if yaml_syntax:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "?"
            raise CatalogFileError(f"{name}: {where}: not valid YAML: {error}") from error
    try:
        # Fractions parse exactly (and are then refused by key path); a key given twice in one
        # object is refused rather than silently keeping the last value.
        return json.loads(text, parse_float=Decimal, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise CatalogFileError(
            f"{name}: line {error.lineno}: not valid JSON: {error.msg}"
        ) from error
    except _RepeatedKey as error:
        raise CatalogFileError(f"{name}: key {error.key!r} appears twice in one object") from error


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedKey(key)
        result[key] = value
    return result


def _catalog(document: Any) -> list[CatalogItem]:
    _require_map(document, _TOP, TOP_KEYS)
    items: list[CatalogItem] = []
    for key, build in (("packages", _package), ("plans", _plan)):
        entries = document.get(key, [])
        if not isinstance(entries, list):
            raise InvalidField(key, "must be a list")
        items.extend(build(entry, f"{key}[{i}]") for i, entry in enumerate(entries))
    if not items:
        raise InvalidField(_TOP, "lists no packages and no plans")
    _require_unique(items)
    return items


def _require_unique(items: list[CatalogItem]) -> None:
    ids: set[str] = set()
    lookup_keys: set[str] = set()
    counts = {"packages": 0, "plans": 0}
    for item in items:
        key = "packages" if isinstance(item, CreditPackage) else "plans"
        where = f"{key}[{counts[key]}]"
        counts[key] += 1
        if item.id in ids:
            raise InvalidField(f"{where}.id", f"repeats {item.id!r}")
        if item.lookup_key in lookup_keys:
            raise InvalidField(f"{where}.lookup_key", f"repeats {item.lookup_key!r}")
        ids.add(item.id)
        lookup_keys.add(item.lookup_key)


def _package(entry: Any, where: str) -> CreditPackage:
    _require_map(entry, where, PACKAGE_KEYS)
    package = CreditPackage(
        id=_string(entry, "id", where),
        name=_string(entry, "name", where),
        credits=_credits(entry, "credits", where),
        unit_amount=_minor_units(entry, "unit_amount", where),
        currency=_string(entry, "currency", where),
        lookup_key=_string(entry, "lookup_key", where),
    )
    check_item(package, where)
    return package


def _plan(entry: Any, where: str) -> Plan:
    _require_map(entry, where, PLAN_KEYS)
    cap = entry.get("rollover_cap")
    plan = Plan(
        id=_string(entry, "id", where),
        name=_string(entry, "name", where),
        interval=_choice(entry, "interval", where, Interval),
        monthly_credits=_credits(entry, "monthly_credits", where),
        unit_amount=_minor_units(entry, "unit_amount", where),
        currency=_string(entry, "currency", where),
        renewal_policy=_choice(entry, "renewal_policy", where, RenewalPolicy),
        rollover_cap=None if cap is None else _credits(entry, "rollover_cap", where, zero=True),
        lookup_key=_string(entry, "lookup_key", where),
    )
    check_item(plan, where)
    return plan


def _require_map(value: Any, where: str, allowed: frozenset[str]) -> None:
    if not isinstance(value, dict):
        raise InvalidField(where, "must be a mapping of keys to values")
    unknown = sorted(str(key) for key in set(value) - allowed)
    if unknown:
        path = unknown[0] if where == _TOP else f"{where}.{unknown[0]}"
        raise InvalidField(
            path, f"is not a known key (expected one of {', '.join(sorted(allowed))})"
        )


def _present(entry: dict[str, Any], key: str, where: str) -> Any:
    value = entry.get(key)
    if value is None:
        raise InvalidField(f"{where}.{key}", "is required")
    return value


def _string(entry: dict[str, Any], key: str, where: str) -> str:
    value = _present(entry, key, where)
    if not isinstance(value, str):
        raise InvalidField(f"{where}.{key}", f"must be a string, got {_shown(value)}")
    return value


def _credits(entry: dict[str, Any], key: str, where: str, *, zero: bool = False) -> int:
    value = _present(entry, key, where)
    if not isinstance(value, str):
        raise InvalidField(
            f"{where}.{key}", f'must be a quoted decimal string such as "100", got {_shown(value)}'
        )
    return parse_amount(value, f"{where}.{key}", allow_zero=zero)


def _minor_units(entry: dict[str, Any], key: str, where: str) -> int:
    value = _present(entry, key, where)
    # bool is an int subclass: `true` is not an amount.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(
            f"{where}.{key}", f"must be a whole number of minor units (cents), got {_shown(value)}"
        )
    return value


def _choice(entry: dict[str, Any], key: str, where: str, kind: type[_Choice]) -> _Choice:
    value = _present(entry, key, where)
    names = [member.value for member in kind]
    if value not in names:
        raise InvalidField(
            f"{where}.{key}", f"must be one of {', '.join(names)}, got {_shown(value)}"
        )
    return kind(value)


def _shown(value: Any) -> str:
    return format(value, "f") if isinstance(value, Decimal) else repr(value)
