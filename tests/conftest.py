"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL, a hand-driven clock,
the use-case context, and an in-process gRPC server with a client.

PostgreSQL: each test session (each xdist worker) creates its own database, migrated with
Alembic, and drops it at the end; tables are truncated between tests. If the server cannot be
reached the PostgreSQL tests fail when CI is set, and skip loudly otherwise.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from creditline import CreditlineClient
from creditline.v1 import credit_service_pb2_grpc
from sqlalchemy import Engine

from billing_service.db import migrate
from billing_service.db.engine import build_engine
from billing_service.domain.clock import ManualClock
from billing_service.rpc.server import RunningServer, build_server
from billing_service.service_layer.context import AppContext, HoldPolicy
from billing_service.service_layer.unit_of_work import Database
from tests.helpers import TABLES

PG_ADMIN_URL = os.environ.get(
    "CREDITLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not reachable ({reason}); set CREDITLINE_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    name = f"creditline_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        _pg_unavailable(str(error).strip())
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    url = f"{base}/{name}"
    engine = build_engine(url, pool_size=1)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = build_engine(f"sqlite:///{path}", pool_size=1)
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty, migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "creditline.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("pg_url")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the test's database."""
    engine = build_engine(database_url, pool_size=40)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


@pytest.fixture
def ctx(engine: Engine, clock: ManualClock) -> AppContext:
    """The use cases' context on the test database and clock."""
    return AppContext(Database(engine), clock, HoldPolicy())


@pytest.fixture
def server(ctx: AppContext) -> Iterator[RunningServer]:
    """The real gRPC server in this process, on a free loopback port."""
    running = build_server(ctx, listen="127.0.0.1:0", tokens={}, max_workers=40)
    yield running
    running.stop(0)


@pytest.fixture
def client(server: RunningServer) -> Iterator[CreditlineClient]:
    """The Python client connected to the in-process server."""
    with CreditlineClient(f"127.0.0.1:{server.port}", backoff=0) as c:
        yield c


@pytest.fixture
def stub(server: RunningServer) -> Iterator[credit_service_pb2_grpc.CreditServiceStub]:
    """A raw generated stub, for requests the typed client would refuse to build."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield credit_service_pb2_grpc.CreditServiceStub(channel)
    channel.close()
