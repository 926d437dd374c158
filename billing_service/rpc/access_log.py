"""One structured log line per RPC (method, status code, duration), and its metrics."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from billing_service.metrics import Metrics
from billing_service.rpc.grpc_types import ServerInterceptor

log = logging.getLogger("creditline.access")


class AccessLogInterceptor(ServerInterceptor):
    """Logs every unary call after it ends, whatever the outcome, and counts it in metrics.

    A coroutine handler is wrapped in a coroutine and a plain one in a plain function, so each
    still runs where grpc.aio runs its kind (the event loop, or the thread pool).
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Wrap the unary handler of the call, if it has one."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        behaviour: Callable[[Any, Any], Any] = handler.unary_unary
        done = self._done

        if inspect.iscoroutinefunction(behaviour):

            async def logged_async(request: Any, context: Any) -> Any:
                call = _LoggedCall(context, method, done)
                try:
                    response = await behaviour(request, call)
                except asyncio.CancelledError:  # the caller went away or its deadline passed
                    call.end(call.cancelled_code())
                    raise
                except BaseException:
                    call.end(grpc.StatusCode.UNKNOWN)
                    raise
                call.end(grpc.StatusCode.OK)
                return response

            logged: Callable[[Any, Any], Any] = logged_async
        else:

            def logged(request: Any, context: Any) -> Any:
                call = _LoggedCall(context, method, done)
                try:
                    response = behaviour(request, call)
                except BaseException:
                    call.end(grpc.StatusCode.UNKNOWN)
                    raise
                call.end(grpc.StatusCode.OK)
                return response

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _done(self, method: str, code: grpc.StatusCode, started: float) -> None:
        """Count the call in metrics and log it."""
        seconds = time.perf_counter() - started
        name = code.name
        if self._metrics is not None:
            self._metrics.observe_rpc(method, name, seconds)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "rpc",
                extra={"method": method, "code": name, "duration_ms": round(seconds * 1000, 3)},
            )


class _LoggedCall:
    """The handler's context, logging the call once with the status code it ends with.

    An abort sends the status before it raises, so the call is logged before the abort, and a
    caller that has its answer finds the line written. A code set with set_code stands over
    what the handler's return or raise would mean.
    """

    __slots__ = ("_code", "_context", "_done", "_method", "_started")

    def __init__(
        self, context: Any, method: str, done: Callable[[str, grpc.StatusCode, float], None]
    ) -> None:
        self._context = context
        self._method = method
        self._done: Callable[[str, grpc.StatusCode, float], None] | None = done
        self._started = time.perf_counter()
        self._code: grpc.StatusCode | None = None

    def end(self, code: grpc.StatusCode) -> None:
        """Log the call, the first time only, with the code set earlier or else this one."""
        done, self._done = self._done, None
        if done is not None:
            done(self._method, self._code or code, self._started)

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> Any:
        """Log the call with code, then abort (raises; on the event loop, returns what to
        await)."""
        self._code = code
        self.end(code)
        return self._context.abort(code, details, trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        """Remember code for the log line, then set it."""
        self._code = code
        self._context.set_code(code)

    def cancelled_code(self) -> grpc.StatusCode:
        """Why a cancelled call ended: its deadline passed, or its caller went away."""
        remaining = self._context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
