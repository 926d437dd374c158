"""Wire-level conversions shared by the servicers: enum numbers, timestamps, durations."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from creditline.v1 import (
    account_pb2,
    catalog_pb2,
    grant_pb2,
    ledger_pb2,
    pricing_pb2,
    reservation_pb2,
    stripe_event_pb2,
    subscription_pb2,
)
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from billing_service.domain.errors import InvalidField

E = TypeVar("E", bound=StrEnum)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Largest timestamp we accept: year 9999, Timestamp's own limit.
_MAX_SECONDS = 253_402_300_799
# Smallest: 0001-01-01T00:00:00Z.
_MIN_SECONDS = -62_135_596_800


def enum_in(cls: type[E], prefix: str, number: int, field: str, *, required: bool) -> E | None:
    """A domain enum from a proto enum number such as BILLING_MODE_PREPAID."""
    if number == 0:
        if required:
            raise InvalidField(field, f"is required (not {prefix}_UNSPECIFIED)")
        return None
    for member in cls:
        if _enum_number(prefix, member) == number:
            return member
    raise InvalidField(field, f"has unknown value {number}")


def enum_out(prefix: str, member: StrEnum) -> int:
    """The proto enum number for a domain enum member."""
    return _enum_number(prefix, member)


def enums_in(cls: type[E], prefix: str, numbers: Iterable[int], field: str) -> list[E]:
    """A list filter of enums; unspecified values are refused."""
    result = []
    for number in numbers:
        member = enum_in(cls, prefix, number, field, required=True)
        assert member is not None
        result.append(member)
    return result


_ENUM_TYPES = {
    "BILLING_MODE": account_pb2.BillingMode,
    "GRANT_SOURCE": grant_pb2.GrantSource,
    "GRANT_STATUS": grant_pb2.GrantStatus,
    "LEDGER_ENTRY_KIND": ledger_pb2.LedgerEntryKind,
    "RESERVATION_STATUS": reservation_pb2.ReservationStatus,
    "TOKEN_CLASS": pricing_pb2.TokenClass,
    "OVERRUN_POLICY": pricing_pb2.OverrunPolicy,
    "SUBSCRIPTION_STATUS": subscription_pb2.SubscriptionStatus,
    "DISPUTE_STATE": stripe_event_pb2.DisputeState,
    "STRIPE_EVENT_OUTCOME": stripe_event_pb2.StripeEventOutcome,
    "RENEWAL_POLICY": catalog_pb2.RenewalPolicy,
    "BILLING_INTERVAL": catalog_pb2.BillingInterval,
}


@functools.cache  # a handful of members, looked up on every response
def _enum_number(prefix: str, member: StrEnum) -> int:
    return int(_ENUM_TYPES[prefix].Value(f"{prefix}_{member.value}"))


def time_in(message: Timestamp, present: bool, field: str) -> datetime | None:
    """A UTC datetime from a Timestamp field, or None when the field is unset."""
    if not present:
        return None
    if not 0 <= message.seconds <= _MAX_SECONDS or not 0 <= message.nanos < 1_000_000_000:
        raise InvalidField(field, "is out of range")
    return datetime.fromtimestamp(message.seconds, UTC) + timedelta(
        microseconds=message.nanos // 1000
    )


def duration_in(message: Duration, present: bool, field: str) -> timedelta | None:
    """A timedelta from a Duration field, or None when unset."""
    if not present:
        return None
    if message.seconds < 0 or message.nanos < 0 or message.seconds > 10 * 365 * 86_400:
        raise InvalidField(field, "must be a positive duration")
    return timedelta(seconds=message.seconds, microseconds=message.nanos // 1000)


def time_out(moment: datetime | None, target: Timestamp) -> None:
    """Write a datetime into a Timestamp field; leave it unset for None.

    The same seconds and nanos as Timestamp.FromDatetime (a naive datetime counts as UTC), in
    a seventh of its time: every answer carries a few of these.
    """
    if moment is not None:
        since = (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)) - _EPOCH
        seconds = since.days * 86_400 + since.seconds
        if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:  # as FromDatetime refuses it
            raise OverflowError(f"{moment.isoformat()} is outside Timestamp's years 1-9999")
        target.seconds = seconds
        target.nanos = since.microseconds * 1_000
