"""Frozen domain dataclasses as JSON and back: stored answers, pinned hold pricing, usage.

The idempotency record keeps the exact first answer, so a replay returns it unchanged even
after the resources it names have moved on.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")


def dumps(value: Any) -> str:
    """Encode a dataclass (and what it holds) as compact JSON."""
    return json.dumps(to_plain(value), separators=(",", ":"), sort_keys=True)


def loads(cls: type[T], text: str) -> T:
    """Decode JSON written by dumps back into an instance of cls."""
    value: T = _build(cls, json.loads(text))
    return value


# Every stored answer and request fingerprint goes through to_plain: the cheap cases first,
# and each dataclass's field names looked up once.
_SCALARS = frozenset({str, int, bool, float, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def to_plain(value: Any) -> Any:  # noqa: PLR0911 - one branch per supported type
    kind = type(value)
    if kind in _SCALARS:
        return value
    names = _FIELD_NAMES.get(kind)
    if names is None and dataclasses.is_dataclass(kind):
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(kind))
    if names is not None:
        return {name: to_plain(getattr(value, name)) for name in names}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    return value


def _build(tp: Any, data: Any) -> Any:  # noqa: PLR0911 - one branch per supported type
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner, data)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _build(hints[f.name], data[f.name]) for f in dataclasses.fields(tp)})
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in data)
        return tuple(_build(a, v) for a, v in zip(args, data, strict=True))
    if origin in (Mapping, dict):
        return dict(data)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(data)
    if tp is datetime:
        return datetime.fromisoformat(data)
    if tp is Decimal:
        return Decimal(data)
    return data
