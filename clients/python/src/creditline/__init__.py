"""Creditline's typed Python client: CreditlineClient, Hold and the typed errors.

The generated protobuf and gRPC modules live in creditline.v1; the request and response
messages the client returns come from there.
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
    PermissionDenied,
    ReservationExpired,
    ReservationNotActive,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from creditline.hold import Hold

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
    "PermissionDenied",
    "ReservationExpired",
    "ReservationNotActive",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]
