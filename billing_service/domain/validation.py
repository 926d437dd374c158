"""Checks on caller-supplied values that hold whatever transport brought them."""

from __future__ import annotations

import re
from collections.abc import Mapping

from billing_service.domain.errors import InvalidField

MAX_ID = 128
MAX_KEY = 255
MAX_TEXT = 500
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
MIN_PRIORITY, MAX_PRIORITY = 0, 100

_ID = re.compile(r"[\x21-\x7e]+")


def check_id(value: str, field: str) -> str:
    """A caller-chosen id: 1 to 128 printable ASCII characters without spaces."""
    if not value:
        raise InvalidField(field, "is required")
    if len(value) > MAX_ID:
        raise InvalidField(field, f"must be at most {MAX_ID} characters")
    if not _ID.fullmatch(value):
        raise InvalidField(field, "must be printable ASCII without spaces")
    return value


def check_optional_id(value: str, field: str) -> str:
    """check_id, allowing empty."""
    return check_id(value, field) if value else value


def check_idempotency_key(value: str) -> str:
    """An idempotency key: required, 1 to 255 printable ASCII characters without spaces."""
    if not value:
        raise InvalidField("idempotency_key", "is required for every mutating call")
    if len(value) > MAX_KEY or not _ID.fullmatch(value):
        raise InvalidField(
            "idempotency_key", f"must be 1 to {MAX_KEY} printable ASCII characters, no spaces"
        )
    return value


def check_text(value: str, field: str, limit: int = MAX_TEXT) -> str:
    """Free text of at most limit characters."""
    if len(value) > limit:
        raise InvalidField(field, f"must be at most {limit} characters")
    return value


def check_metadata(values: Mapping[str, str], field: str = "metadata") -> dict[str, str]:
    """Labels: at most 50 keys of 1 to 40 characters, values of at most 500."""
    if len(values) > MAX_METADATA_KEYS:
        raise InvalidField(field, f"must have at most {MAX_METADATA_KEYS} keys")
    for key, value in values.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise InvalidField(field, f"keys must be 1 to {MAX_METADATA_KEY} characters")
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidField(field, f"values must be at most {MAX_METADATA_VALUE} characters")
    return dict(values)


def check_priority(value: int | None) -> int | None:
    """A drain priority from 0 to 100, or None for the default."""
    if value is not None and not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidField("priority", f"must be from {MIN_PRIORITY} to {MAX_PRIORITY}")
    return value
