"""The gRPC server factory: CreditService, BillingService, health, reflection, auth, logs.

The server is grpc.aio's, on an event loop of its own thread. The hot calls (spend, holds,
balances, estimates) are coroutines on that loop: they queue their work for a group-commit
flush and wait without holding a thread. Every other call is a plain function that the server
runs on a pool of `max_workers` threads, as a thread-per-call server would.

`build_server` binds, starts and returns the port it got (tests bind port 0);
`RunningServer.stop` flips health to NOT_SERVING, then drains in-flight calls within the
grace period. Both are called from ordinary threads.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Coroutine
from concurrent import futures
from typing import Any, TypeVar

import grpc
from creditline.v1 import (
    billing_service_pb2,
    billing_service_pb2_grpc,
    credit_service_pb2,
    credit_service_pb2_grpc,
)
from grpc_health.v1 import _async as health_aio  # public as health.aio, unknown to the stubs
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from billing_service.metrics import Metrics
from billing_service.rpc.access_log import AccessLogInterceptor
from billing_service.rpc.auth import AuthInterceptor, Principal
from billing_service.rpc.billing_servicer import BillingServicer
from billing_service.rpc.credit_servicer import CreditServicer
from billing_service.rpc.grpc_types import ServerInterceptor
from billing_service.service_layer.context import AppContext

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"].full_name,
    billing_service_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)

T = TypeVar("T")


class InsecureListenError(RuntimeError):
    """Raised when asked to listen beyond loopback with no auth tokens configured."""


class _LoopThread:
    """An asyncio event loop running forever on a daemon thread of its own."""

    def __init__(self, executor: futures.ThreadPoolExecutor) -> None:
        self.loop = asyncio.new_event_loop()
        # asyncio.to_thread, for the coroutine handlers' blocking parts, runs on the pool too.
        self.loop.set_default_executor(executor)
        self._thread = threading.Thread(target=self._run, name="rpc-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run coroutine on the loop and wait for its result from this (another) thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        """Stop the loop, wait for its thread, and close it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class RunningServer:
    """A started server and the port it bound."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        health_servicer: health_aio.HealthServicer,
        loop: _LoopThread,
        pool: futures.ThreadPoolExecutor,
    ) -> None:
        self.port = port
        self._server = server
        self._health = health_servicer
        self._loop = loop
        self._pool = pool
        self._stopping = threading.Lock()
        self._stopped = False

    def stop(self, grace: float) -> None:
        """Stop taking calls, let running ones finish within grace seconds, then stop.

        Returns once the server has stopped (about grace seconds at most); a plain-function
        handler still running past the grace period finishes in the background, and the event
        loop (which its answer or abort needs) is closed after it. Calling stop again does
        nothing."""
        with self._stopping:
            if self._stopped:
                return
            self._stopped = True
        self._loop.call(self._stop(grace))
        self._pool.shutdown(wait=False, cancel_futures=True)
        threading.Thread(target=self._close_when_idle, name="rpc-close", daemon=True).start()

    async def _stop(self, grace: float) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

    def _close_when_idle(self) -> None:
        self._pool.shutdown(wait=True)
        self._loop.close()


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
    interceptors: list[ServerInterceptor] = [AccessLogInterceptor(metrics)]
    if tokens:
        interceptors.append(AuthInterceptor(tokens))
    else:
        log.warning("auth is off: no CREDITLINE_AUTH_TOKENS, listening on loopback only")
    pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc")
    loop = _LoopThread(pool)
    try:
        server, port, health_servicer = loop.call(
            _start(ctx, listen, interceptors, pool, reuse_port)
        )
    except BaseException:
        loop.close()
        pool.shutdown(wait=False)
        raise
    return RunningServer(server, port, health_servicer, loop, pool)


async def _start(
    ctx: AppContext,
    listen: str,
    interceptors: list[ServerInterceptor],
    pool: futures.ThreadPoolExecutor,
    reuse_port: bool,
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    server = grpc.aio.server(
        migration_thread_pool=pool,
        interceptors=interceptors,
        # Off by default so a port already in use is an error, not a silent second server.
        options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
    )
    credit_service_pb2_grpc.add_CreditServiceServicer_to_server(CreditServicer(ctx), server)
    billing_service_pb2_grpc.add_BillingServiceServicer_to_server(BillingServicer(ctx), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not bind {listen}")
    await server.start()
    for name in ("", *SERVICE_NAMES[:2]):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer
