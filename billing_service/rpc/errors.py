"""The one table that turns domain errors into gRPC statuses (AIP-193).

Every refusal leaves with a google.rpc.Status carrying an ErrorInfo (reason, domain and the
metadata a caller acts on) and, for bad input, a BadRequest naming the field. Anything that is
not a DomainError is a bug: it is logged with its traceback and answered INTERNAL with no
detail, so no stack trace or secret ever reaches a caller.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from billing_service.domain.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidField,
    NotFound,
    Unavailable,
)

DOMAIN = "creditline.dev"

log = logging.getLogger(__name__)

# Most specific class first: the first match decides.
STATUS_FOR: tuple[tuple[type[DomainError], grpc.StatusCode], ...] = (
    (InvalidField, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def status_code_for(error: DomainError) -> grpc.StatusCode:
    """The gRPC status code for a domain error."""
    for cls, code in STATUS_FOR:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(
    code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str], field: str = ""
) -> grpc.Status:
    """A status with ErrorInfo (and BadRequest when a field is named) packed in its details."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    details = [info]
    if field:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
                ]
            )
        )
        details.append(bad)
    proto = status_pb2.Status(code=code.value[0], message=message, details=details)
    return rpc_status.to_status(proto)


def domain_status(error: DomainError) -> grpc.Status:
    """The status the table gives this error."""
    field = error.field if isinstance(error, InvalidField) else ""
    return rich_status(status_code_for(error), error.message, error.reason, error.metadata, field)


def internal_status(method: str) -> grpc.Status:
    """INTERNAL after an unexpected failure, which is logged; the status reveals nothing of it."""
    log.exception("unexpected failure", extra={"method": method})
    return rich_status(
        grpc.StatusCode.INTERNAL,
        "internal error; the call may be retried with the same idempotency key",
        "INTERNAL",
        {},
    )


def abort_with(context: Any, status: grpc.Status) -> Any:
    """End the call with status: raises, or (on an asyncio context) returns what to await.

    `abort` with the status's parts rather than `abort_with_status`, which the context that
    grpc.aio gives to plain-function handlers does not have.
    """
    return context.abort(status.code, status.details, status.trailing_metadata)


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[[Any, Req, grpc.ServicerContext], Resp]


def translated(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Answer domain errors with their status and anything unexpected with INTERNAL."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Resp:
        try:
            return method(self, request, context)
        except DomainError as error:
            abort_with(context, domain_status(error))
        except Exception:
            abort_with(context, internal_status(method.__name__))
        raise AssertionError("abort returns only by raising")

    return wrapper


AsyncMethod = Callable[[Any, Req, Any], Awaitable[Resp]]


def translated_async(method: AsyncMethod[Req, Resp]) -> AsyncMethod[Req, Resp]:
    """translated, for the coroutine handlers that grpc.aio runs on its event loop."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: Any) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:  # the handler aborted with its own status: keep it
            raise
        except DomainError as error:
            await abort_with(context, domain_status(error))
        except Exception:
            await abort_with(context, internal_status(method.__name__))
        raise AssertionError("abort returns only by raising")

    return wrapper
