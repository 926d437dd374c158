"""Typed exceptions for Creditline's gRPC errors, and the one function that chooses them.

The server puts a google.rpc.Status in every error's trailing metadata. Its google.rpc.ErrorInfo
(domain "creditline.dev") carries a stable reason and string metadata, and bad input also carries
a google.rpc.BadRequest naming the field. `from_grpc_error` turns a grpc.RpcError into the most
specific class below: a reason class when the reason has one, otherwise the class of the status
code. An error without details still maps by its code. Hierarchy:

    CreditlineError              .code .reason .metadata .message .field .details
    ├── InvalidArgument          INVALID_ARGUMENT: INVALID_FIELD, PARENT_CYCLE
    │   └── IdempotencyKeyReused     IDEMPOTENCY_KEY_REUSED
    ├── NotFound                 NOT_FOUND: ACCOUNT_, GRANT_, RESERVATION_, LEDGER_ENTRY_,
    │                            MODEL_, TIER_, PRICE_BOOK_NOT_FOUND
    ├── AlreadyExists            ALREADY_EXISTS: ACCOUNT_EXISTS
    ├── FailedPrecondition       FAILED_PRECONDITION: GRANT_NOT_ACTIVE, NOT_A_SPEND,
    │   │                        REFUND_EXCEEDS_SPEND, BALANCE_LIMIT_EXCEEDED
    │   ├── InsufficientCredits      INSUFFICIENT_CREDITS: .balance .held .available .required
    │   ├── ReservationExpired       RESERVATION_EXPIRED
    │   ├── ReservationNotActive     RESERVATION_NOT_ACTIVE
    │   └── OverrunRejected          OVERRUN_REJECTED: .held .actual
    ├── Unauthenticated          UNAUTHENTICATED
    ├── PermissionDenied         PERMISSION_DENIED
    ├── Unavailable              UNAVAILABLE: DATABASE_UNAVAILABLE (the client retries it)
    ├── DeadlineExceeded         DEADLINE_EXCEEDED (the client retries it)
    └── ServerError              any other code: INTERNAL, UNKNOWN, CANCELLED, ...
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

_M = TypeVar("_M", bound=Message)

ERROR_DOMAIN: Final = "creditline.dev"
"""The ErrorInfo domain of Creditline's own errors; only these choose a reason class."""

# The google.rpc detail messages a status may carry; any other detail stays a packed Any.
_DETAIL_TYPES: Final[tuple[type[Message], ...]] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.RequestInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)


class CreditlineError(Exception):
    """A call to Creditline failed; the attributes say how, for code to act on.

    `code` is the gRPC status code, `reason` the ErrorInfo reason ("" when the error carried
    none), `metadata` the ErrorInfo metadata, `message` the status message, `field` the request
    field the server refused (or None) and `details` every detail message of the status, unpacked
    where it is a google.rpc error detail.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field: str | None = None,
        details: tuple[Message, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field = field
        self.details = details

    def __str__(self) -> str:
        label = f"{self.code.name} {self.reason}" if self.reason else self.code.name
        return f"{label}: {self.message}"


class InvalidArgument(CreditlineError):
    """The request was malformed; `field` names the field the server refused."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class IdempotencyKeyReused(InvalidArgument):
    """The idempotency key was already used for a different request; use a new key."""


class NotFound(CreditlineError):
    """The named resource does not exist; `reason` says which kind.

    ACCOUNT_, GRANT_, RESERVATION_ and LEDGER_ENTRY_NOT_FOUND from CreditService; MODEL_,
    TIER_ and PRICE_BOOK_NOT_FOUND when usage names a model or tier the price book lacks, or a
    call names a price book version that does not exist.
    """

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CreditlineError):
    """The resource the call tried to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CreditlineError):
    """The request was well-formed, but the state it acts on does not allow it now."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InsufficientCredits(FailedPrecondition):
    """The account's available credits do not cover the request.

    The amounts come from the ErrorInfo metadata as exact Decimals; each is None when the server
    did not send it.
    """

    @property
    def account_id(self) -> str:
        """The account that lacked credits, or "" when the server did not say."""
        return self.metadata.get("account_id", "")

    @property
    def balance(self) -> Decimal | None:
        """The account's balance when the call was refused."""
        return _metadata_decimal(self.metadata, "balance")

    @property
    def held(self) -> Decimal | None:
        """The credits held by active reservations when the call was refused."""
        return _metadata_decimal(self.metadata, "held")

    @property
    def available(self) -> Decimal | None:
        """The credits that could be spent or held when the call was refused."""
        return _metadata_decimal(self.metadata, "available")

    @property
    def required(self) -> Decimal | None:
        """The credits the call needed."""
        return _metadata_decimal(self.metadata, "required")


class ReservationExpired(FailedPrecondition):
    """The hold passed its expiry time before it was committed."""


class ReservationNotActive(FailedPrecondition):
    """The hold was already committed, released or expired."""


class OverrunRejected(FailedPrecondition):
    """The actual cost is above the hold, and the hold's overrun policy is REJECT.

    The hold stays active: commit a smaller amount, or release it. The amounts come from the
    ErrorInfo metadata as exact Decimals; each is None when the server did not send it.
    """

    @property
    def held(self) -> Decimal | None:
        """The credits the hold reserved."""
        return _metadata_decimal(self.metadata, "held")

    @property
    def actual(self) -> Decimal | None:
        """The credits the commit would have charged."""
        return _metadata_decimal(self.metadata, "actual")


class Unauthenticated(CreditlineError):
    """The bearer token is missing or unknown."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(CreditlineError):
    """The token's roles do not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(CreditlineError):
    """The service or its database could not be reached; the call changed nothing."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(CreditlineError):
    """The call did not finish before its deadline; it may or may not have taken effect."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ServerError(CreditlineError):
    """Any other failure, such as INTERNAL or UNKNOWN; `code` says which."""


_CODE_CLASSES: Final[dict[grpc.StatusCode, type[CreditlineError]]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}

_REASON_CLASSES: Final[dict[str, type[CreditlineError]]] = {
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReused,
    "INSUFFICIENT_CREDITS": InsufficientCredits,
    "RESERVATION_EXPIRED": ReservationExpired,
    "RESERVATION_NOT_ACTIVE": ReservationNotActive,
    "OVERRUN_REJECTED": OverrunRejected,
}


def from_grpc_error(err: grpc.RpcError) -> CreditlineError:
    """Map a failed call's grpc.RpcError to the most specific CreditlineError.

    A reason class is chosen only for an ErrorInfo of Creditline's own domain whose status code
    matches the class, so a stray reason can never turn, say, an INTERNAL error into a
    FailedPrecondition. An RpcError that is not a grpc.Call carries no status and maps to
    ServerError with code UNKNOWN.
    """
    if not isinstance(err, grpc.Call):
        return ServerError(str(err) or type(err).__name__, code=grpc.StatusCode.UNKNOWN)
    code = err.code()
    message = err.details() or ""
    details = _unpack_details(err)
    info = _first(details, error_details_pb2.ErrorInfo)
    bad_request = _first(details, error_details_pb2.BadRequest)

    reason = info.reason if info is not None else ""
    metadata = dict(info.metadata) if info is not None else {}
    field = metadata.get("field")
    if field is None and bad_request is not None and bad_request.field_violations:
        field = bad_request.field_violations[0].field

    cls = _CODE_CLASSES.get(code, ServerError)
    reason_cls = _REASON_CLASSES.get(reason)
    if (
        info is not None
        and info.domain == ERROR_DOMAIN
        and reason_cls is not None
        and issubclass(reason_cls, cls)
    ):
        cls = reason_cls
    return cls(message, code=code, reason=reason, metadata=metadata, field=field, details=details)


def _unpack_details(call: grpc.Call) -> tuple[Message, ...]:
    """Unpack the detail messages of the call's google.rpc.Status, or () when it has none."""
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        # The rich status disagrees with the status line; trust the status line alone.
        return ()
    if not isinstance(status, status_pb2.Status):
        return ()
    return tuple(_unpack(detail) for detail in status.details)


def _unpack(detail: any_pb2.Any) -> Message:
    """Unpack one detail into its google.rpc message type, or keep it packed when unknown."""
    for detail_type in _DETAIL_TYPES:
        if detail.TypeName() == detail_type.DESCRIPTOR.full_name:
            message = detail_type()
            detail.Unpack(message)
            return message
    return detail


def _first(details: tuple[Message, ...], kind: type[_M]) -> _M | None:
    """The first detail of the given type, or None."""
    return next((detail for detail in details if isinstance(detail, kind)), None)


def _metadata_decimal(metadata: dict[str, str], key: str) -> Decimal | None:
    """The metadata value under key as an exact Decimal, or None when absent or malformed."""
    text = metadata.get(key)
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None
