"""Concurrency tests through the real in-process gRPC server, on SQLite and PostgreSQL.

Threads are released together by a Barrier and call the server through several clients at
once. They check DESIGN §4 under concurrency: a PREPAID account never goes below zero and its
balance is the sum of exactly the entries the successful calls reported (§4.1, §4.2); the same
idempotency key sent many times at once moves credits once and every caller gets the first
answer, and with a different request it is refused (§4.3); a balance read while others write
describes one moment.

On PostgreSQL the duplicate tests also hold the account's row lock until every duplicate is
queued on it, which forces the worst interleaving: every duplicate has looked for the key's
record before the first one commits. SQLite runs each write transaction whole, one at a time
(BEGIN IMMEDIATE), so no such interleaving exists there and the Barrier alone starts the race.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import pytest
from creditline import CreditlineClient
from creditline.errors import CreditlineError, IdempotencyKeyReused, InsufficientCredits
from creditline.v1 import grant_pb2, ledger_pb2, reservation_pb2
from sqlalchemy import Engine, text

from billing_service.rpc.server import RunningServer, build_server
from billing_service.service_layer.context import AppContext
from tests.helpers import accounts_pinned, ledger_sum, table_counts

MICROS = 1_000_000
THREADS = 32
CALLS_PER_THREAD = 5
DUPLICATES = 16
CLIENTS = 4
READS = 300  # balance reads made while writers keep writing
WRITERS = 4
SPEND = ledger_pb2.LEDGER_ENTRY_KIND_SPEND
GRANT = ledger_pb2.LEDGER_ENTRY_KIND_GRANT
COMMITTED = reservation_pb2.RESERVATION_STATUS_COMMITTED
RELEASED = reservation_pb2.RESERVATION_STATUS_RELEASED


def micros(amount: str) -> int:
    """An API amount string as exact micro-credits."""
    value = Decimal(amount) * MICROS
    assert value == value.to_integral_value(), amount
    return int(value)


def credits_of(amount: int) -> Decimal:
    """Micro-credits as the exact Decimal the client sends."""
    return Decimal(amount).scaleb(-6)


@pytest.fixture
def clients(server: RunningServer) -> Iterator[list[CreditlineClient]]:
    """Several clients, each with its own channel, on the in-process server."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(CreditlineClient(f"127.0.0.1:{server.port}", backoff=0))
            for _ in range(CLIENTS)
        ]


def open_account(client: CreditlineClient, credits: str) -> str:
    """A new PREPAID account holding `credits` in one never-expiring bucket."""
    account_id = f"acct-{uuid.uuid4().hex[:12]}"
    client.create_account(account_id)
    client.grant_credits(account_id, credits, source=grant_pb2.GRANT_SOURCE_PURCHASE)
    return account_id


def call_together(
    engine: Engine,
    account_id: str,
    calls: Sequence[Callable[[], Any]],
    waiters: int | None = None,
) -> list[Any]:
    """Run the calls in threads released at once; each response or typed error, in order.

    On PostgreSQL the account's row stays locked until `waiters` sessions (all the calls, by
    default) queue behind it. Spends and holds sent to one server queue in its group committer
    instead, behind one leader, so for them it is one waiter per server.
    """
    results: list[Any] = [None] * len(calls)
    unexpected: list[BaseException] = []
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except CreditlineError as error:
            results[i] = error
        except BaseException as error:  # reported in the main thread
            unexpected.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with accounts_pinned(engine, [account_id], waiters or len(calls)):
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join()
    assert unexpected == []
    return results


def ledger_in_order(engine: Engine, account_id: str) -> list[tuple[str, str, int, int]]:
    """(id, kind, amount, balance_after) of every entry, in the order they were written."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, kind, amount, balance_after FROM ledger_entries"
                " WHERE account_id = :a ORDER BY seq"
            ),
            {"a": account_id},
        ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def assert_written_one_at_a_time(engine: Engine, account_id: str) -> None:
    """Every entry's balance_after is the running sum: no two writers saw the same balance."""
    running = 0
    for entry in ledger_in_order(engine, account_id):
        running += entry[2]
        assert entry[3] == running, entry


# -- many calls on one account ---------------------------------------------------------------

KINDS = ("spend", "commit below", "commit equal", "commit above", "release")


def plan(thread: int, call: int) -> tuple[str, int, int]:
    """(kind, amount asked, credits it consumes if it succeeds) of one call, in micro-credits.

    Amounts run from 0.25 to 2 credits plus a few micro-credits, so no two are alike and none
    is a whole number.
    """
    amount = 250_000 * (1 + (thread * 7 + call * 3) % 8) + 1 + thread
    kind = KINDS[(thread + call) % len(KINDS)]
    consumed = {
        "spend": amount,
        "commit below": amount * 2 // 3,
        "commit equal": amount,
        "commit above": amount + amount // 2,
        "release": 0,
    }[kind]
    return kind, amount, consumed


def test_concurrent_spends_and_holds_never_overdraw_a_prepaid_account(
    clients: list[CreditlineClient], engine: Engine
) -> None:
    plans = [[plan(t, c) for c in range(CALLS_PER_THREAD)] for t in range(THREADS)]
    demand = sum(consumed for calls in plans for _, _, consumed in calls)
    # Less than everything asked for: some calls must be refused, whatever the interleaving.
    granted = demand // 2
    account_id = open_account(clients[0], str(credits_of(granted)))

    lock = threading.Lock()
    # (kind, ledger entry id, credits, reservation id) of each charge, as its caller was told.
    charged: list[tuple[str, str, int, str]] = []
    refused: list[str] = []
    released: list[str] = []
    unexpected: list[BaseException] = []
    seen: list[tuple[int, int, int]] = []  # (balance, held, available) read mid-flight
    barrier = threading.Barrier(THREADS + 1)
    done = threading.Event()

    def charge(client: CreditlineClient, kind: str, amount: int, consumed: int) -> None:
        if kind == "spend":
            spent = client.spend_credits(account_id, credits_of(amount))
            assert micros(spent.ledger_entry.amount) == -amount
            with lock:
                charged.append((kind, spent.ledger_entry.entry_id, amount, ""))
            return
        hold = client.reserve_credits(account_id, credits_of(amount)).reservation
        if kind == "release":
            let_go = client.release_reservation(hold.reservation_id).reservation
            assert let_go.status == reservation_pb2.RESERVATION_STATUS_RELEASED
            with lock:
                released.append(hold.reservation_id)
            return
        try:
            settled = client.commit_reservation(hold.reservation_id, credits_of(consumed))
        except InsufficientCredits:
            # Only more than the hold can be refused; the hold is then still ours to release.
            assert consumed > amount
            client.release_reservation(hold.reservation_id)
            with lock:
                refused.append(f"{kind} {consumed}")
                released.append(hold.reservation_id)
            return
        entry = settled.ledger_entry
        assert settled.reservation.status == reservation_pb2.RESERVATION_STATUS_COMMITTED
        assert (entry.reservation_id, micros(entry.amount)) == (hold.reservation_id, -consumed)
        with lock:
            charged.append((kind, entry.entry_id, consumed, hold.reservation_id))

    def work(thread: int) -> None:
        client = clients[thread % CLIENTS]
        barrier.wait()
        try:
            for kind, amount, consumed in plans[thread]:
                try:
                    charge(client, kind, amount, consumed)
                except InsufficientCredits as error:
                    assert error.available is not None
                    assert error.available >= 0
                    with lock:
                        refused.append(f"{kind} {amount}")
        except BaseException as error:  # reported in the main thread
            unexpected.append(error)

    def watch() -> None:
        client = clients[-1]
        barrier.wait()
        try:
            while True:
                balance = client.get_balance(account_id).balance
                seen.append(
                    (micros(balance.balance), micros(balance.held), micros(balance.available))
                )
                if done.is_set():
                    return
        except BaseException as error:  # reported in the main thread
            unexpected.append(error)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    watcher = threading.Thread(target=watch)
    for thread in [*workers, watcher]:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    watcher.join()

    assert unexpected == []
    assert charged, "no call went through"
    assert refused, "the account paid for more than it was granted"
    # Mid-flight, every read was consistent and never below zero.
    assert seen
    for balance, held, available in seen:
        assert available == balance - held
        assert available >= 0
        assert 0 <= held <= balance

    client = clients[0]
    final = client.get_balance(account_id).balance
    spent = sum(c[2] for c in charged)
    assert micros(final.held) == 0
    assert micros(final.available) == micros(final.balance)
    assert micros(final.balance) == ledger_sum(engine, account_id) == granted - spent >= 0

    # Every reported entry exists exactly once, and no SPEND exists that no caller was told of.
    entries = list(client.iter_ledger_entries(account_id, page_size=25))
    ids = [e.entry_id for e in entries]
    assert len(ids) == len(set(ids))
    assert {e.entry_id: micros(e.amount) for e in entries if e.kind == SPEND} == {
        c[1]: -c[2] for c in charged
    }
    assert len(charged) == len({c[1] for c in charged})
    assert [e.kind for e in entries if e.kind != SPEND] == [GRANT]
    assert_written_one_at_a_time(engine, account_id)

    # No hold is left behind: each was committed or released, as its caller was told.
    holds = list(client.iter_reservations(account_id, page_size=50))
    assert sorted(h.reservation_id for h in holds if h.status == RELEASED) == sorted(released)
    assert {h.reservation_id: h.ledger_entry_id for h in holds if h.status == COMMITTED} == {
        hold_id: entry_id for kind, entry_id, _, hold_id in charged if kind != "spend"
    }
    assert len(holds) == len(released) + sum(1 for c in charged if c[0] != "spend")


# -- the same key at once ----------------------------------------------------------------------


def assert_one_first_answer(results: Sequence[Any]) -> None:
    """All answered, exactly one afresh and the rest as replays of it."""
    errors = [r for r in results if isinstance(r, CreditlineError)]
    assert errors == []
    assert sorted(r.replayed for r in results) == [False] + [True] * (len(results) - 1)


def test_concurrent_duplicate_spends_move_credits_once(
    clients: list[CreditlineClient], engine: Engine
) -> None:
    account_id = open_account(clients[0], "100")
    key = uuid.uuid4().hex

    def spend(client: CreditlineClient) -> Callable[[], Any]:
        return lambda: client.spend_credits(account_id, "2.500001", idempotency_key=key)

    results = call_together(
        engine, account_id, [spend(clients[i % CLIENTS]) for i in range(DUPLICATES)], waiters=1
    )

    assert_one_first_answer(results)
    first = results[0]
    assert all(r.ledger_entry == first.ledger_entry for r in results)
    assert all(r.available == first.available for r in results)
    spends = [e for e in ledger_in_order(engine, account_id) if e[1] == "SPEND"]
    assert spends == [(first.ledger_entry.entry_id, "SPEND", -2_500_001, 97_499_999)]
    assert ledger_sum(engine, account_id) == 97_499_999
    assert micros(clients[0].get_balance(account_id).balance.balance) == 97_499_999


def test_concurrent_duplicate_spends_replay_even_when_a_second_spend_could_not_be_paid(
    clients: list[CreditlineClient], engine: Engine
) -> None:
    account_id = open_account(clients[0], "10")
    key = uuid.uuid4().hex

    def spend(client: CreditlineClient) -> Callable[[], Any]:
        return lambda: client.spend_credits(account_id, "6", idempotency_key=key)

    results = call_together(
        engine, account_id, [spend(clients[i % CLIENTS]) for i in range(DUPLICATES)], waiters=1
    )

    assert_one_first_answer(results)
    assert len({r.ledger_entry.entry_id for r in results}) == 1
    assert ledger_sum(engine, account_id) == 4 * MICROS


def test_concurrent_duplicate_reserves_hold_once(
    clients: list[CreditlineClient], engine: Engine
) -> None:
    account_id = open_account(clients[0], "100")
    key = uuid.uuid4().hex

    def reserve(client: CreditlineClient) -> Callable[[], Any]:
        return lambda: client.reserve_credits(account_id, "7.25", idempotency_key=key)

    results = call_together(
        engine, account_id, [reserve(clients[i % CLIENTS]) for i in range(DUPLICATES)], waiters=1
    )

    assert_one_first_answer(results)
    first = results[0].reservation
    assert all(r.reservation == first for r in results)
    holds = list(clients[0].iter_reservations(account_id))
    assert [(h.reservation_id, h.status, h.amount) for h in holds] == [
        (first.reservation_id, reservation_pb2.RESERVATION_STATUS_ACTIVE, "7.25")
    ]
    balance = clients[0].get_balance(account_id).balance
    assert (balance.balance, balance.held, balance.available) == ("100", "7.25", "92.75")
    assert [e[1] for e in ledger_in_order(engine, account_id)] == ["GRANT"]


def test_concurrent_duplicate_commits_settle_once(
    clients: list[CreditlineClient], engine: Engine
) -> None:
    account_id = open_account(clients[0], "100")
    hold = clients[0].reserve_credits(account_id, "10").reservation
    key = uuid.uuid4().hex

    def commit(client: CreditlineClient) -> Callable[[], Any]:
        return lambda: client.commit_reservation(hold.reservation_id, "7.5", idempotency_key=key)

    results = call_together(
        engine, account_id, [commit(clients[i % CLIENTS]) for i in range(DUPLICATES)], waiters=1
    )

    assert_one_first_answer(results)
    entry = results[0].ledger_entry
    assert all(r.ledger_entry == entry for r in results)
    assert entry.reservation_id == hold.reservation_id
    spends = [e for e in ledger_in_order(engine, account_id) if e[1] == "SPEND"]
    assert spends == [(entry.entry_id, "SPEND", -7_500_000, 92_500_000)]
    balance = clients[0].get_balance(account_id).balance
    assert (balance.balance, balance.held, balance.available) == ("92.5", "0", "92.5")
    settled = clients[0].get_reservation(hold.reservation_id).reservation
    assert settled.status == reservation_pb2.RESERVATION_STATUS_COMMITTED
    assert settled.committed_amount == "7.5"


def test_same_key_with_a_different_amount_is_refused_concurrently_and_after(
    clients: list[CreditlineClient], engine: Engine
) -> None:
    account_id = open_account(clients[0], "100")
    key = uuid.uuid4().hex

    def spend(client: CreditlineClient, amount: str) -> Callable[[], Any]:
        return lambda: client.spend_credits(account_id, amount, idempotency_key=key)

    asked = ["1.5" if i % 2 else "2" for i in range(DUPLICATES)]
    results = call_together(
        engine,
        account_id,
        [spend(clients[i % CLIENTS], amount) for i, amount in enumerate(asked)],
        waiters=1,
    )

    # Whichever amount came first won the key; every call asking for it got that answer, and
    # every call asking for the other amount was refused with the typed error.
    answered = [(a, r) for a, r in zip(asked, results, strict=True) if not isinstance(r, Exception)]
    assert answered
    winner = answered[0][0]
    assert {a for a, _ in answered} == {winner}
    assert_one_first_answer([r for _, r in answered])
    for amount, result in zip(asked, results, strict=True):
        if amount != winner:
            assert isinstance(result, IdempotencyKeyReused)
            assert (result.reason, result.field) == ("IDEMPOTENCY_KEY_REUSED", "idempotency_key")
    entry_id = answered[0][1].ledger_entry.entry_id
    left = 100 * MICROS - micros(winner)
    spends = [e for e in ledger_in_order(engine, account_id) if e[1] == "SPEND"]
    assert spends == [(entry_id, "SPEND", -micros(winner), left)]

    # Later, too: another amount is refused and changes nothing; the first request replays.
    counts = table_counts(engine)
    with pytest.raises(IdempotencyKeyReused):
        clients[0].spend_credits(account_id, "3", idempotency_key=key)
    assert table_counts(engine) == counts
    again = clients[1].spend_credits(account_id, winner, idempotency_key=key)
    assert (again.replayed, again.ledger_entry.entry_id) == (True, entry_id)
    assert table_counts(engine) == counts
    assert ledger_sum(engine, account_id) == left
    assert micros(clients[0].get_balance(account_id).balance.balance) == left


# -- reads while others write ------------------------------------------------------------------


def test_a_balance_read_during_concurrent_writes_describes_one_moment(
    clients: list[CreditlineClient], engine: Engine
) -> None:
    # One never-expiring bucket: every balance is exactly that bucket's remaining and held.
    account_id = open_account(clients[0], "1000000")
    barrier = threading.Barrier(WRITERS + 1)
    stop = threading.Event()
    unexpected: list[BaseException] = []
    views: list[tuple[int, int, int, int]] = []  # (balance, bucket remaining, held, bucket held)

    def write(client: CreditlineClient) -> None:
        barrier.wait()
        try:
            while not stop.is_set():
                client.spend_credits(account_id, "0.000003")
                hold = client.reserve_credits(account_id, "0.5").reservation
                client.commit_reservation(hold.reservation_id, "0.25")
        except BaseException as error:  # reported in the main thread
            unexpected.append(error)

    def read() -> None:
        barrier.wait()
        try:
            for _ in range(READS):
                view = clients[0].get_balance(account_id).balance
                views.append(
                    (
                        micros(view.balance),
                        sum(micros(g.remaining) for g in view.grants),
                        micros(view.held),
                        sum(micros(g.held) for g in view.grants),
                    )
                )
                balance, remaining, held, bucket_held = views[-1]
                if (balance, held) != (remaining, bucket_held):
                    break  # one torn view is enough
        finally:
            stop.set()

    writers = [
        threading.Thread(target=write, args=(clients[1 + i % (CLIENTS - 1)],))
        for i in range(WRITERS)
    ]
    reader = threading.Thread(target=read)
    for thread in [*writers, reader]:
        thread.start()
    for thread in [reader, *writers]:
        thread.join()

    assert unexpected == []
    assert views
    assert [v for v in views if v[0] != v[1] or v[2] != v[3]] == []


def test_concurrent_duplicate_spends_on_two_replicas_move_credits_once(
    clients: list[CreditlineClient], engine: Engine, ctx: AppContext
) -> None:
    """Two servers (two batchers) on one database: both batch leaders wait on the account's
    row, and the one that goes second must find the first's record under the lock and replay,
    even though a second spend of 6 could not be paid."""
    replica = build_server(
        AppContext(ctx.db, ctx.clock, ctx.holds), listen="127.0.0.1:0", tokens={}
    )
    try:
        with CreditlineClient(f"127.0.0.1:{replica.port}", backoff=0) as other:
            account_id = open_account(clients[0], "10")
            key = uuid.uuid4().hex
            calls = [
                (
                    lambda c=(clients[0] if i % 2 else other): c.spend_credits(
                        account_id, "6", idempotency_key=key
                    )
                )
                for i in range(DUPLICATES)
            ]
            results = call_together(engine, account_id, calls, waiters=2)
    finally:
        replica.stop(0)
    assert_one_first_answer(results)
    assert len({r.ledger_entry.entry_id for r in results}) == 1
    assert ledger_sum(engine, account_id) == 4 * MICROS


def test_concurrent_duplicate_commits_on_two_replicas_settle_once(
    clients: list[CreditlineClient], engine: Engine, ctx: AppContext
) -> None:
    """Two servers (two group committers) on one database commit one hold with one key: the
    leader that goes second finds the first's record under the account lock and replays,
    although the hold it would settle is no longer active."""
    replica = build_server(
        AppContext(ctx.db, ctx.clock, ctx.holds), listen="127.0.0.1:0", tokens={}
    )
    try:
        with CreditlineClient(f"127.0.0.1:{replica.port}", backoff=0) as other:
            account_id = open_account(clients[0], "100")
            hold = clients[0].reserve_credits(account_id, "10").reservation
            key = uuid.uuid4().hex
            calls = [
                (
                    lambda c=(clients[0] if i % 2 else other): c.commit_reservation(
                        hold.reservation_id, "7.5", idempotency_key=key
                    )
                )
                for i in range(DUPLICATES)
            ]
            results = call_together(engine, account_id, calls, waiters=2)
    finally:
        replica.stop(0)
    assert_one_first_answer(results)
    assert len({r.ledger_entry.entry_id for r in results}) == 1
    assert ledger_sum(engine, account_id) == 92_500_000
