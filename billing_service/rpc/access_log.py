"""One structured log line per RPC (method, status code, duration), and its metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from billing_service.metrics import Metrics
from billing_service.rpc.grpc_types import ServerInterceptor

log = logging.getLogger("creditline.access")


class AccessLogInterceptor(ServerInterceptor):
    """Logs every unary call after it ends, whatever the outcome, and counts it in metrics."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the unary handler of the call, if it has one."""
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        behaviour = handler.unary_unary

        def logged(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return behaviour(request, context)
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
                raise
            finally:
                seconds = time.perf_counter() - started
                name = getattr(code, "name", str(code))
                if self._metrics is not None:
                    self._metrics.observe_rpc(method, name, seconds)
                if log.isEnabledFor(logging.INFO):
                    log.info(
                        "rpc",
                        extra={
                            "method": method,
                            "code": name,
                            "duration_ms": round(seconds * 1000, 3),
                        },
                    )

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
