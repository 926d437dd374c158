"""Wire conversions that replace protobuf's own helpers must agree with them exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from billing_service.rpc.wire import time_out

ZONES = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
# Naive bounds, as st.datetimes wants; a day inside datetime's range so any offset fits.
EARLIEST = datetime(1, 1, 2)  # noqa: DTZ001
LATEST = datetime(9999, 12, 30)  # noqa: DTZ001


@given(moment=st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=ZONES))
def test_time_out_writes_what_from_datetime_writes(moment: datetime) -> None:
    ours, theirs = Timestamp(), Timestamp()
    time_out(moment, ours)
    theirs.FromDatetime(moment)
    assert (ours.seconds, ours.nanos) == (theirs.seconds, theirs.nanos)


def test_time_out_leaves_the_field_unset_for_none() -> None:
    target = Timestamp(seconds=5)
    time_out(None, target)
    assert target.seconds == 5


def test_time_out_refuses_what_from_datetime_refuses() -> None:
    beyond = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=1)))  # year 10000 UTC
    with pytest.raises(OverflowError):
        Timestamp().FromDatetime(beyond)
    with pytest.raises(OverflowError):
        time_out(beyond, Timestamp())
