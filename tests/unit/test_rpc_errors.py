"""translated_async: domain errors become their status, an abort of the handler's own stands."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from billing_service.domain.errors import InvalidField
from billing_service.rpc.errors import translated_async


class Context:
    """Records the aborts asked of it and raises as grpc.aio's context does."""

    def __init__(self) -> None:
        self.aborts: list[grpc.StatusCode] = []

    async def abort(self, code: grpc.StatusCode, details: str = "", metadata: Any = ()) -> None:
        self.aborts.append(code)
        raise grpc.aio.AbortError(details)


class Servicer:
    @translated_async
    async def Refused(self, request: object, context: Any) -> None:
        raise InvalidField("amount", "must be positive")

    @translated_async
    async def AbortsItself(self, request: object, context: Any) -> None:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")


def test_a_domain_error_aborts_with_its_status() -> None:
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(Servicer().Refused(None, context))
    assert context.aborts == [grpc.StatusCode.INVALID_ARGUMENT]


def test_a_handler_that_aborts_itself_keeps_its_status() -> None:
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(Servicer().AbortsItself(None, context))
    assert context.aborts == [grpc.StatusCode.PERMISSION_DENIED]  # not aborted again as INTERNAL
