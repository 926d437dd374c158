"""DESIGN §4.6: nothing is lost when the server is killed mid-request. A call either happened
fully, and its retry with the same key replays it, or not at all, and its retry applies it.

The server is SIGKILLed (no graceful shutdown) while eight threads spend, restarted on the same
database, and every call is retried with its key. Afterwards each key must have exactly one
SPEND entry and the balance must be what exactly-once accounting says.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from creditline import CreditlineClient, CreditlineError
from creditline.v1 import grant_pb2, ledger_pb2

from tests.e2e.conftest import (
    ServerProcess,
    creditline_env,
    fresh_postgres_database,
    run_creditline,
)

pytestmark = pytest.mark.e2e

THREADS = 8
CALLS_PER_THREAD = 40
KILL_AFTER = 80  # acknowledged spends before the kill
AMOUNT = Decimal("1.5")
GRANT = Decimal(10_000)


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'creditline.db'}"
        return
    with fresh_postgres_database() as url:
        migrated = run_creditline(["migrate"], creditline_env(url), workdir)
        assert migrated.returncode == 0, migrated.stderr
        yield url


def started(env: dict[str, str], workdir: Path) -> ServerProcess:
    server = ServerProcess(["serve"], env, workdir)
    server.wait_for_log(lambda r: r.get("message") == "serving")
    return server


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_killed_server_loses_nothing_and_applies_nothing_twice(
    backend: str, tmp_path: Path
) -> None:
    keys = [[f"crash-{t}-{i}" for i in range(CALLS_PER_THREAD)] for t in range(THREADS)]
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    enough = threading.Event()

    with database(backend, tmp_path) as url:
        env = creditline_env(url)
        first = started(env, tmp_path)
        try:
            with CreditlineClient(first.address, max_attempts=1, timeout=10) as setup:
                setup.create_account("acct")
                setup.grant_credits("acct", GRANT, source=grant_pb2.GRANT_SOURCE_PURCHASE)

            def spend_all(thread_keys: list[str]) -> None:
                with CreditlineClient(first.address, max_attempts=1, timeout=10) as client:
                    for key in thread_keys:
                        try:
                            done = client.spend_credits("acct", AMOUNT, idempotency_key=key)
                        except CreditlineError:
                            continue  # the server is gone; this call's fate is unknown
                        with lock:
                            acknowledged[key] = done.ledger_entry.entry_id
                            if len(acknowledged) >= KILL_AFTER:
                                enough.set()

            threads = [threading.Thread(target=spend_all, args=(k,)) for k in keys]
            for thread in threads:
                thread.start()
            assert enough.wait(timeout=60), "the spends never got going"
            first.stop(signal.SIGKILL)
            for thread in threads:
                thread.join()
        finally:
            first.stop(signal.SIGKILL)

        second = started(env, tmp_path)
        try:
            with CreditlineClient(second.address, timeout=10) as client:
                for key in (k for thread_keys in keys for k in thread_keys):
                    again = client.spend_credits("acct", AMOUNT, idempotency_key=key)
                    if key in acknowledged:
                        assert again.replayed, f"{key} was acknowledged but not replayed"
                        assert again.ledger_entry.entry_id == acknowledged[key]
                spends = [
                    e
                    for e in client.iter_ledger_entries(
                        "acct", kinds=[ledger_pb2.LEDGER_ENTRY_KIND_SPEND], page_size=500
                    )
                ]
                balance = client.get_balance("acct").balance
        finally:
            assert second.stop() == 0

    total = THREADS * CALLS_PER_THREAD
    assert KILL_AFTER <= len(acknowledged) < total, "the kill must interrupt the spends"
    assert sorted(e.idempotency_key for e in spends) == sorted(
        k for thread_keys in keys for k in thread_keys
    )
    assert Decimal(balance.balance) == GRANT - total * AMOUNT
    assert balance.held == "0"
