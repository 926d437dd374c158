"""Stripe's form encoding, decoded into nested dicts and lists.

This module owns turning `application/x-www-form-urlencoded` bodies and query strings as the
`stripe` library writes them (`metadata[account_id]=x`, `line_items[0][price]=p`,
`expand[0]=data.product`, `expand[]=data.product`) into nested Python values. Values stay
strings: the spec check in `stripe_spec` coerces them to integers and booleans where the
schema says so. An empty value (`metadata=`) stays the empty string, which Stripe reads as
"unset".
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_INDEX = re.compile(r"\d+")

Form = dict[str, Any]


class FormError(ValueError):
    """A parameter name that is not Stripe's bracket notation, or that clashes with another."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"Invalid parameter name {key!r}: {reason}")
        self.key = key


def split_key(key: str) -> list[str]:
    """`line_items[0][price]` -> `["line_items", "0", "price"]`; `expand[]` -> `["expand", ""]`."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise FormError(key, "not of the form name[a][b]")
    return [match.group(1), *_SEGMENT.findall(match.group(2))]


class _Append:
    """A list being built from `name[]=...` pairs."""

    def __init__(self) -> None:
        self.items: list[Any] = []


def _insert(node: dict[str, Any], segments: list[str], value: str, key: str) -> None:
    head, rest = segments[0], segments[1:]
    if not rest:
        if isinstance(node.get(head), (dict, _Append)):
            raise FormError(key, f"{head!r} is both a value and a container")
        node[head] = value
        return
    nxt = rest[0]
    if nxt == "":
        target = node.setdefault(head, _Append())
        if not isinstance(target, _Append):
            raise FormError(key, f"{head!r} is both a list and something else")
        tail = rest[1:]
        if not tail:
            target.items.append(value)
            return
        # `a[][b]=1&a[][c]=2` fills one element until a key repeats, as Rack does.
        last = target.items[-1] if target.items else None
        if not isinstance(last, dict) or _holds(last, tail):
            last = {}
            target.items.append(last)
        _insert(last, tail, value, key)
        return
    child = node.setdefault(head, {})
    if not isinstance(child, dict):
        raise FormError(key, f"{head!r} is both a value and a container")
    _insert(child, rest, value, key)


def _holds(node: dict[str, Any], segments: list[str]) -> bool:
    head, rest = segments[0], segments[1:]
    if head not in node:
        return False
    if not rest:
        return True
    child = node[head]
    return isinstance(child, dict) and _holds(child, rest)


def _finish(value: Any) -> Any:
    if isinstance(value, _Append):
        return [_finish(item) for item in value.items]
    if isinstance(value, dict):
        done = {k: _finish(v) for k, v in value.items()}
        keys = list(done)
        if keys and all(_INDEX.fullmatch(k) for k in keys):
            indices = sorted(int(k) for k in keys)
            if indices == list(range(len(indices))):
                return [done[str(i)] for i in indices]
        return done
    return value


def decode_pairs(pairs: list[tuple[str, str]]) -> Form:
    """Nested params from decoded `(key, value)` pairs, in order."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        _insert(root, split_key(key), value, key)
    result: Form = _finish(root)
    return result


def decode(text: str) -> Form:
    """Nested params from a form body or query string (without the leading `?`).

    Dicts keyed `0..n-1` become lists; a dict keyed by other numbers stays a dict
    (`metadata[7]=x`).
    """
    return decode_pairs(parse_qsl(text, keep_blank_values=True, strict_parsing=False))


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}[{key}]" if prefix else str(key), item, out)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _flatten(f"{prefix}[{index}]", item, out)
    elif isinstance(value, bool):
        out.append((prefix, "true" if value else "false"))
    else:
        out.append((prefix, str(value)))


def encode(params: dict[str, Any]) -> str:
    """Params in Stripe's form encoding, brackets left readable, as `stripe` 16 writes them."""
    pairs: list[tuple[str, str]] = []
    _flatten("", params, pairs)
    return urlencode(pairs).replace("%5B", "[").replace("%5D", "]")
