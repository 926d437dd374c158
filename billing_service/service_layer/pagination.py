"""Opaque keyset page tokens (AIP-158): the position after the last item, bound to the filters
it was issued for, so a token cannot be replayed against a different query."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from billing_service.domain.errors import InvalidField

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Page(Generic[T]):
    """Items of one page and the token of the next, empty on the last page."""

    items: list[T]
    next_token: str


def page_size(requested: int) -> int:
    """The page size to use: the default for 0, refused outside 1 to MAX_PAGE_SIZE."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= requested <= MAX_PAGE_SIZE:
        raise InvalidField("page_size", f"must be from 1 to {MAX_PAGE_SIZE} (0 for default)")
    return requested


def _filter_hash(filters: Mapping[str, Any]) -> str:
    text = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_token(position: Sequence[Any], filters: Mapping[str, Any]) -> str:
    """A token that continues after position for the same filters."""
    raw = json.dumps({"p": list(position), "f": _filter_hash(filters)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: Mapping[str, Any]) -> list[Any] | None:
    """The position a token continues after, or None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        position = data["p"]
        bound = data["f"]
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidField("page_token", "is not a token this service issued") from error
    if bound != _filter_hash(filters) or not isinstance(position, list):
        raise InvalidField("page_token", "was issued for different filters")
    return position
