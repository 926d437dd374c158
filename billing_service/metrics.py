"""Prometheus metrics: what every RPC and every sweeper pass did, exported over HTTP.

Each server gets its own registry (tests start many servers in one process). The exporter is
off unless CREDITLINE_METRICS_LISTEN names an address.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# Seconds; spans a cached read (sub-millisecond) to a contended hot-account write.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The server's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "creditline_rpc",
            "RPCs answered, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "creditline_rpc_duration_seconds",
            "Time to answer an RPC, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.swept_accounts = Counter(
            "creditline_sweeper_accounts",
            "Accounts whose due expiries and pending grants the sweeper applied.",
            registry=self.registry,
        )
        self.pruned_idempotency_records = Counter(
            "creditline_sweeper_idempotency_records_deleted",
            "Idempotency records the sweeper deleted past CREDITLINE_IDEMPOTENCY_RETENTION_DAYS.",
            registry=self.registry,
        )
        self.sweep_failures = Counter(
            "creditline_sweeper_failures",
            "Sweeper passes that failed (they are retried after the interval).",
            registry=self.registry,
        )

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """Count one answered RPC and its duration."""
        self.rpcs.labels(method=method, code=code).inc()
        self.rpc_seconds.labels(method=method).observe(seconds)

    def serve(self, listen: str) -> str:
        """Export /metrics over HTTP on host:port (port 0 picks one); the bound address."""
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=self.registry
        )
        bound_port = server.server_address[1]
        return f"{host}:{bound_port}"
