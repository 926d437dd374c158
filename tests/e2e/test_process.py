"""The `creditline` process itself: refusing to start, shutting down, auth tokens, migrations.

Each test starts its own short-lived processes, since each needs its own configuration.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from billing_service.db import migrate
from billing_service.db.engine import build_engine
from tests.e2e.conftest import (
    COMMAND_TIMEOUT,
    Grpcurl,
    ServerProcess,
    creditline_env,
    fresh_postgres_database,
    run_creditline,
    serving,
)

pytestmark = pytest.mark.e2e

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]


def is_serving(record: dict[str, object]) -> bool:
    """The record a server logs once it has bound its port."""
    return record.get("message") == "serving"


def create_token(workdir: Path, name: str, roles: str) -> tuple[str, str]:
    """`creditline token --name NAME --roles ROLES`: the token and its config entry."""
    made = run_creditline(
        ["token", "--name", name, "--roles", roles], creditline_env("sqlite://"), workdir
    )
    assert made.returncode == 0, made.stderr
    lines = dict(line.split(": ", 1) for line in made.stdout.splitlines())
    token = next(v.strip() for k, v in lines.items() if k.startswith("token"))
    entry = next(v.strip() for k, v in lines.items() if k.startswith("CREDITLINE_AUTH_TOKENS"))
    return token, entry


def test_refuses_to_listen_beyond_loopback_without_tokens(tmp_path: Path) -> None:
    env = creditline_env(f"sqlite:///{tmp_path / 'open.db'}", listen="0.0.0.0:0")

    with ServerProcess(["serve"], env, tmp_path) as server:
        code = server.wait()

    assert code == 1
    errors = [r for r in server.records() if r.get("level") == "ERROR"]
    assert len(errors) == 1, server.stderr_text()
    assert "refusing to listen on 0.0.0.0:0 with auth off" in str(errors[0]["message"])
    assert "serving" not in server.messages()


def test_listens_beyond_loopback_when_tokens_are_set(tmp_path: Path) -> None:
    _, entry = create_token(tmp_path, "ops", "reader")
    env = creditline_env(f"sqlite:///{tmp_path / 'open.db'}", listen="0.0.0.0:0", auth_tokens=entry)

    with serving(env, tmp_path) as server:
        record = server.wait_for_log(is_serving)
        port = str(record["address"]).rpartition(":")[2]
        health = Grpcurl(f"127.0.0.1:{port}").call("grpc.health.v1.Health/Check")

    assert str(record["address"]).startswith("0.0.0.0:")
    assert record["auth"] is True
    assert health == {"status": "SERVING"}


def test_sigterm_shuts_down_gracefully(tmp_path: Path) -> None:
    env = creditline_env(f"sqlite:///{tmp_path / 'term.db'}")

    with ServerProcess(["serve"], env, tmp_path) as server:
        # A served call first: the signal handlers are installed after the "serving" line
        # (see test_sigterm_right_after_serving_is_graceful), and this call takes far longer.
        assert Grpcurl(server.address).call("grpc.health.v1.Health/Check") == {"status": "SERVING"}
        code = server.stop(signal.SIGTERM)

    messages = server.messages()
    assert code == 0, server.stderr_text()
    assert "shutting down" in messages
    assert "stopped" in messages
    assert messages.index("serving") < messages.index("shutting down") < messages.index("stopped")
    assert messages[-1] == "stopped"


def test_sigterm_right_after_serving_is_graceful(tmp_path: Path) -> None:
    # The signal is sent from inside the process right after the "serving" line (where the
    # sweeper starts), the earliest moment a caller could already be talking to it.
    script = textwrap.dedent(
        """
        import os, signal, sys
        from billing_service import cli

        def start_then_get_signalled(self):
            os.kill(os.getpid(), signal.SIGTERM)

        cli.Sweeper.start = start_then_get_signalled
        sys.exit(cli.main(["serve"]))
        """
    )
    env = creditline_env(f"sqlite:///{tmp_path / 'race.db'}")

    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )

    assert '"message": "serving"' in done.stderr
    assert done.returncode == 0, f"exit {done.returncode}; stderr:\n{done.stderr}"
    assert '"message": "stopped"' in done.stderr


def test_token_command_and_an_authenticated_server(tmp_path: Path) -> None:
    service_token, service_entry = create_token(tmp_path, "e2e-caller", "service")
    admin_token, admin_entry = create_token(tmp_path, "e2e-admin", "admin")
    env = creditline_env(
        f"sqlite:///{tmp_path / 'auth.db'}", auth_tokens=f"{service_entry},{admin_entry}"
    )
    account_id = f"auth-{uuid.uuid4().hex[:12]}"

    assert service_token.startswith("cl_")
    assert service_entry == (
        f"e2e-caller:service:{hashlib.sha256(service_token.encode()).hexdigest()}"
    )
    assert service_token not in service_entry
    assert service_token != admin_token

    with serving(env, tmp_path) as server:
        anonymous = Grpcurl(server.address)
        service = anonymous.with_header(f"authorization: Bearer {service_token}")
        admin = anonymous.with_header(f"authorization: Bearer {admin_token}")
        strange = anonymous.with_header(f"authorization: Bearer {admin_token}x")

        health = anonymous.call("grpc.health.v1.Health/Check")
        listed = anonymous.run("list")
        no_token = anonymous.fail("GetBalance", {"account_id": account_id})
        bad_token = strange.fail("GetBalance", {"account_id": account_id})
        admin.call(
            "CreateAccount",
            {
                "account": {"account_id": account_id, "billing_mode": "BILLING_MODE_PREPAID"},
                "idempotency_key": uuid.uuid4().hex,
            },
        )
        admin.call(
            "GrantCredits",
            {
                "account_id": account_id,
                "amount": "5",
                "source": "GRANT_SOURCE_PURCHASE",
                "idempotency_key": uuid.uuid4().hex,
            },
        )
        spent = service.call(
            "SpendCredits",
            {"account_id": account_id, "amount": "2", "idempotency_key": uuid.uuid4().hex},
        )
        balance = service.call("GetBalance", {"account_id": account_id})["balance"]
        denied = service.fail(
            "GrantCredits",
            {
                "account_id": account_id,
                "amount": "5",
                "source": "GRANT_SOURCE_PURCHASE",
                "idempotency_key": uuid.uuid4().hex,
            },
        )
        serving_record = server.wait_for_log(is_serving)

    assert serving_record["auth"] is True
    assert health == {"status": "SERVING"}
    assert "creditline.v1.CreditService" in listed.stdout.split()
    for refused in (no_token, bad_token):
        assert refused.code == UNAUTHENTICATED
        assert refused.error_info()["reason"] == "UNAUTHENTICATED"
    assert spent["available"] == "3"
    assert (balance["balance"], balance["held"], balance["available"]) == ("3", "0", "3")
    assert denied.code == PERMISSION_DENIED
    assert denied.error_info()["reason"] == "PERMISSION_DENIED"
    assert service_token not in server.stderr_text()
    assert admin_token not in server.stderr_text()


def test_serve_creates_and_migrates_a_new_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "brand-new.db"
    url = f"sqlite:///{path}"
    account_id = f"fresh-{uuid.uuid4().hex[:12]}"
    assert not path.exists()

    with serving(creditline_env(url), tmp_path) as first:
        created = Grpcurl(first.address).call(
            "CreateAccount",
            {
                "account": {"account_id": account_id, "billing_mode": "BILLING_MODE_PREPAID"},
                "idempotency_key": uuid.uuid4().hex,
            },
        )
    with serving(creditline_env(url), tmp_path) as second:
        fetched = Grpcurl(second.address).call("GetAccount", {"account_id": account_id})

    assert created["account"]["account_id"] == account_id
    assert "migrating the SQLite database to the newest schema" in first.messages()
    assert "migrating the SQLite database to the newest schema" not in second.messages()
    assert fetched["account"]["account_id"] == account_id
    engine = build_engine(url, pool_size=1)
    try:
        assert migrate.is_current(engine)
        with engine.connect() as conn:
            revisions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert len(revisions) == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_serve_refuses_an_unmigrated_postgresql_until_migrate_runs(tmp_path: Path) -> None:
    with fresh_postgres_database() as url:
        env = creditline_env(url)
        with ServerProcess(["serve"], env, tmp_path) as refused:
            code = refused.wait()
        migrated = run_creditline(["migrate"], env, tmp_path)
        with serving(env, tmp_path) as server:
            health = Grpcurl(server.address).call("grpc.health.v1.Health/Check")

    assert code == 1
    assert any("run `creditline migrate` first" in m for m in refused.messages())
    assert "serving" not in refused.messages()
    assert migrated.returncode == 0, migrated.stderr
    assert health == {"status": "SERVING"}
