"""Creditline's typed Python client: CreditlineClient, Hold, PricedRun and the typed errors.

Usage for estimates and estimate-sized holds is built with creditline.usage (line, usage). The
generated protobuf and gRPC modules live in creditline.v1; the request and response messages
the client returns come from there.
"""

from importlib.metadata import version

from creditline.client import CreditlineClient
from creditline.errors import (
    AlreadyExists,
    CreditlineError,
    DeadlineExceeded,
    FailedPrecondition,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidArgument,
    NotFound,
    OverrunRejected,
    PermissionDenied,
    ReservationExpired,
    ReservationNotActive,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from creditline.hold import Hold, PricedRun

__version__ = version("creditline")

__all__ = [
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
]
