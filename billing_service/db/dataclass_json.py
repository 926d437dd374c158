"""Frozen domain dataclasses as JSON and back: stored answers, pinned hold pricing, usage.

The idempotency record keeps the exact first answer, so a replay returns it unchanged even
after the resources it names have moved on.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
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


# Every stored answer and request fingerprint goes through to_plain, a few dozen values each:
# how to convert a value is decided once per type and kept.
_CONVERTERS: dict[type, Callable[[Any], Any]] = {}


def to_plain(value: Any) -> Any:
    """A dataclass (and what it holds) as JSON-ready lists, dicts and scalars."""
    kind = type(value)
    convert = _CONVERTERS.get(kind)
    if convert is None:
        convert = _CONVERTERS[kind] = _converter_for(kind)
    return convert(value)


def _same(value: Any) -> Any:
    return value


def _converter_for(kind: type) -> Callable[[Any], Any]:  # noqa: PLR0911 - one per type
    if kind in (str, int, bool, float, type(None)):
        return _same
    if dataclasses.is_dataclass(kind):
        names = tuple(f.name for f in dataclasses.fields(kind))
        return lambda value: {name: to_plain(getattr(value, name)) for name in names}
    if issubclass(kind, Enum):
        return lambda value: value.value
    if issubclass(kind, datetime):
        return datetime.isoformat
    if issubclass(kind, Decimal):
        return str
    if issubclass(kind, Mapping):
        return lambda value: {k: to_plain(v) for k, v in value.items()}
    if issubclass(kind, tuple | list):
        return lambda value: [to_plain(v) for v in value]
    return _same


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
