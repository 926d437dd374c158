"""The gRPC server factory: CreditService, BillingService, health, reflection, auth, logs.

`build_server` binds and returns the port it got (tests bind port 0); `RunningServer.stop`
drains in-flight calls within the grace period after flipping health to NOT_SERVING.
"""

from __future__ import annotations

import ipaddress
import logging
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from creditline.v1 import (
    billing_service_pb2,
    billing_service_pb2_grpc,
    credit_service_pb2,
    credit_service_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from billing_service.metrics import Metrics
from billing_service.rpc.access_log import AccessLogInterceptor
from billing_service.rpc.auth import AuthInterceptor, Principal
from billing_service.rpc.billing_servicer import BillingServicer
from billing_service.rpc.credit_servicer import CreditServicer
from billing_service.service_layer.context import AppContext

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"].full_name,
    billing_service_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)


class InsecureListenError(RuntimeError):
    """Raised when asked to listen beyond loopback with no auth tokens configured."""


@dataclass
class RunningServer:
    """A started server and the port it bound."""

    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, grace: float) -> None:
        """Stop taking calls, let running ones finish within grace seconds, then stop."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def is_loopback(listen: str) -> bool:
    """True when host:port names only this machine."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(
    ctx: AppContext,
    *,
    listen: str,
    tokens: dict[str, Principal],
    max_workers: int = 32,
    reuse_port: bool = False,
    metrics: Metrics | None = None,
) -> RunningServer:
    """Create, bind and start the server; refuses to listen openly without auth."""
    if not tokens and not is_loopback(listen):
        raise InsecureListenError(
            f"refusing to listen on {listen} with auth off: set CREDITLINE_AUTH_TOKENS "
            "or listen on 127.0.0.1"
        )
    interceptors: list[grpc.ServerInterceptor[Any, Any]] = [AccessLogInterceptor(metrics)]
    if tokens:
        interceptors.append(AuthInterceptor(tokens))
    else:
        log.warning("auth is off: no CREDITLINE_AUTH_TOKENS, listening on loopback only")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=interceptors,
        # Off by default so a port already in use is an error, not a silent second server.
        options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
    )
    credit_service_pb2_grpc.add_CreditServiceServicer_to_server(CreditServicer(ctx), server)
    billing_service_pb2_grpc.add_BillingServiceServicer_to_server(BillingServicer(ctx), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not bind {listen}")
    server.start()
    for name in ("", *SERVICE_NAMES[:2]):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer)
