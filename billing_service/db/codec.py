"""Column encodings shared by the repositories: times, JSON maps and bucket movements."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing_service.domain.model import Movement

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """A UTC datetime as integer microseconds since the epoch."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """Integer microseconds since the epoch as a UTC datetime."""
    return _EPOCH + timedelta(microseconds=value)


def opt_to_micros(moment: datetime | None) -> int | None:
    """to_micros, passing None through."""
    return None if moment is None else to_micros(moment)


def opt_from_micros(value: int | None) -> datetime | None:
    """from_micros, passing None through."""
    return None if value is None else from_micros(value)


def decimal_text(value: Decimal) -> str:
    """An exact decimal as plain positional text: never an exponent such as 5E-7."""
    return format(value, "f")


def dump_map(values: Mapping[str, str]) -> str:
    """A string map as compact JSON with sorted keys."""
    return json.dumps(dict(values), sort_keys=True, separators=(",", ":"))


def load_map(text: str) -> dict[str, str]:
    """The inverse of dump_map."""
    loaded: dict[str, str] = json.loads(text)
    return loaded


def dump_movements(movements: tuple[Movement, ...]) -> str:
    """Bucket movements as a JSON list of [grant_id, micros] pairs."""
    return json.dumps([[grant_id, credits] for grant_id, credits in movements])


def load_movements(text: str) -> tuple[Movement, ...]:
    """The inverse of dump_movements."""
    return tuple((str(grant_id), int(credits)) for grant_id, credits in json.loads(text))
