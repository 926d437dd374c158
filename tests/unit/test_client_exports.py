"""The creditline package's public surface: exactly these names, each one importable.

A name added to or dropped from `creditline.__all__` is an API change, so this list changes with
it, on purpose.
"""

from __future__ import annotations

import importlib.metadata

import creditline

EXPORTED = {
    "AlreadyExists",
    "CreditlineClient",
    "CreditlineError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Hold",
    "IdempotencyKeyReused",
    "InsufficientCredits",
    "InvalidArgument",
    "NotFound",
    "OverrunRejected",
    "PermissionDenied",
    "PricedRun",
    "ReservationExpired",
    "ReservationNotActive",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "__version__",
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(creditline.__all__) == EXPORTED
    assert len(creditline.__all__) == len(EXPORTED)


def test_every_exported_name_is_defined() -> None:
    for name in creditline.__all__:
        assert getattr(creditline, name) is not None, name


def test_every_exported_error_is_a_creditline_error() -> None:
    errors = [
        getattr(creditline, name)
        for name in creditline.__all__
        if name not in {"CreditlineClient", "Hold", "PricedRun", "__version__"}
    ]

    assert all(issubclass(error, creditline.CreditlineError) for error in errors)
    assert all(error.__module__ == "creditline.errors" for error in errors)


def test_version_is_the_distribution_version() -> None:
    assert creditline.__version__ == importlib.metadata.version("creditline")
