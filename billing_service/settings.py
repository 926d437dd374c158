"""Settings, read once from CREDITLINE_* environment variables into a frozen object.

Every knob has a default that runs a single local node with no set-up: a SQLite file in the
working directory, loopback only, auth off. The README's configuration table lists them all.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Creditline server settings."""

    model_config = SettingsConfigDict(
        env_prefix="CREDITLINE_", frozen=True, extra="ignore", populate_by_name=True
    )

    database_url: str = Field(
        "sqlite:///creditline.db", description="SQLAlchemy URL: sqlite:///FILE or postgresql://…"
    )
    listen: str = Field("127.0.0.1:50051", description="host:port the gRPC server binds")
    auth_tokens: str = Field(
        "", description="Comma-separated NAME:ROLE[+ROLE]:SHA256HEX entries; empty turns auth off"
    )
    hold_default_ttl_seconds: int = Field(900, gt=0, description="hold TTL when none is given")
    hold_max_ttl_seconds: int = Field(86_400, gt=0, description="longest TTL a hold may ask")
    sweep_interval_seconds: float = Field(
        5.0, gt=0, description="how often the sweeper looks for due expiries"
    )
    sweep_batch: int = Field(100, gt=0, description="accounts swept per sweeper pass")
    idempotency_retention_days: int = Field(
        30,
        ge=0,
        description="days a mutating call's idempotency key replays its first answer; the "
        "sweeper deletes older records (0 keeps them forever)",
    )
    run_jobs: bool = Field(True, description="run background jobs inside `serve`")
    seed_default_price_book: bool = Field(
        True, description="load the shipped price book as version 1 when there is none"
    )
    max_workers: int = Field(32, gt=0, description="gRPC worker threads")
    workers: int = Field(1, gt=0, le=64, description="server processes sharing the port")
    reuse_port: bool = Field(
        False, description="let other processes bind the same port (set for --workers)"
    )
    db_pool_size: int = Field(20, gt=0, description="database connections kept open")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="time for calls to finish")
    metrics_listen: str = Field(
        "", description="host:port for Prometheus /metrics over HTTP; empty turns it off"
    )
    write_lanes: int = Field(
        1,
        ge=1,
        le=64,
        description="concurrent group-commit flushes of spends and holds per process",
    )
    price_book_refresh_seconds: float = Field(
        1.0,
        ge=0,
        description="how stale the price book version in force may be for account-free "
        "estimates on a replica that did not write the new version",
    )
    stripe_secret_key: str = Field(
        "",
        validation_alias="STRIPE_SECRET_KEY",
        description="Stripe secret key (sk_…); empty runs without Stripe",
    )
    stripe_api_base: str = Field(
        "https://api.stripe.com",
        validation_alias="STRIPE_API_BASE",
        description="Stripe API address; tests point it at a local fake",
    )
    stripe_max_network_retries: int = Field(
        2, ge=0, le=10, description="retries of a failed Stripe request, with its idempotency key"
    )
    freeze_allowance_when_past_due: bool = Field(
        False,
        description="freeze a subscription's credits while its renewal payment is past due",
    )
    seed_default_catalog: bool = Field(
        True, description="load the shipped catalog (packages and plans) when the catalog is empty"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("listen")
    @classmethod
    def _has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be host:port, e.g. 127.0.0.1:50051")
        return value

    @property
    def hold_default_ttl(self) -> timedelta:
        """hold_default_ttl_seconds as a timedelta."""
        return timedelta(seconds=self.hold_default_ttl_seconds)

    @property
    def hold_max_ttl(self) -> timedelta:
        """hold_max_ttl_seconds as a timedelta."""
        return timedelta(seconds=self.hold_max_ttl_seconds)

    @property
    def idempotency_retention(self) -> timedelta | None:
        """idempotency_retention_days as a timedelta; None keeps records forever."""
        days = self.idempotency_retention_days
        return timedelta(days=days) if days else None
