"""Accounts: create, read, update with a field mask, parents without cycles, pagination."""

from __future__ import annotations

import threading

import pytest
from creditline import CreditlineClient
from creditline.errors import AlreadyExists, InvalidArgument, NotFound
from creditline.v1 import account_pb2
from sqlalchemy import Engine

from tests.helpers import accounts_pinned


def test_create_and_get(client: CreditlineClient) -> None:
    created = client.create_account(
        "org-1",
        billing_mode=account_pb2.BILLING_MODE_HYBRID,
        stripe_customer_id="cus_123",
        low_balance_threshold="12.5",
        metadata={"plan": "pro"},
    ).account
    got = client.get_account("org-1").account
    assert got == created
    assert (got.billing_mode, got.stripe_customer_id, got.low_balance_threshold) == (
        account_pb2.BILLING_MODE_HYBRID,
        "cus_123",
        "12.5",
    )
    assert dict(got.metadata) == {"plan": "pro"}
    assert got.create_time == got.update_time


def test_existing_id_with_a_new_key_already_exists(client: CreditlineClient) -> None:
    client.create_account("org-1")
    with pytest.raises(AlreadyExists) as caught:
        client.create_account("org-1")
    assert caught.value.reason == "ACCOUNT_EXISTS"


def test_update_changes_only_masked_fields(client: CreditlineClient) -> None:
    client.create_account("parent")
    client.create_account("team", metadata={"a": "1"}, stripe_customer_id="cus_1")
    updated = client.update_account(
        "team", parent_account_id="parent", low_balance_threshold="5"
    ).account
    assert (updated.parent_account_id, updated.low_balance_threshold) == ("parent", "5")
    assert (dict(updated.metadata), updated.stripe_customer_id) == ({"a": "1"}, "cus_1")
    cleared = client.update_account("team", low_balance_threshold=None, metadata={}).account
    assert (cleared.low_balance_threshold, dict(cleared.metadata)) == ("", {})
    assert cleared.parent_account_id == "parent"


def test_parent_cycles_are_refused(client: CreditlineClient) -> None:
    client.create_account("org")
    client.create_account("team", parent_account_id="org")
    client.create_account("user", parent_account_id="team")
    with pytest.raises(InvalidArgument) as caught:
        client.update_account("org", parent_account_id="user")
    assert (caught.value.reason, caught.value.field) == (
        "PARENT_CYCLE",
        "account.parent_account_id",
    )
    with pytest.raises(InvalidArgument):
        client.update_account("org", parent_account_id="org")
    with pytest.raises(NotFound):
        client.update_account("org", parent_account_id="ghost")
    assert client.get_account("org").account.parent_account_id == ""


def test_list_pages_in_id_order_and_by_parent(client: CreditlineClient) -> None:
    client.create_account("org")
    for name in ["c", "a", "e", "b", "d"]:
        client.create_account(name, parent_account_id="org" if name in "abc" else "")
    seen, token = [], ""
    while True:
        page = client.list_accounts(page_size=2, page_token=token)
        seen.append([a.account_id for a in page.accounts])
        token = page.next_page_token
        if not token:
            break
    assert seen == [["a", "b"], ["c", "d"], ["e", "org"]]
    children = client.list_accounts(parent_account_id="org").accounts
    assert [a.account_id for a in children] == ["a", "b", "c"]


def test_concurrent_reparenting_cannot_make_a_cycle(
    client: CreditlineClient, engine: Engine
) -> None:
    client.create_account("a")
    client.create_account("b")
    outcomes: list[str] = []

    def link(child: str, parent: str) -> None:
        try:
            client.update_account(child, parent_account_id=parent)
            outcomes.append("linked")
        except InvalidArgument as error:
            outcomes.append(error.reason)

    threads = [
        threading.Thread(target=link, args=("a", "b")),
        threading.Thread(target=link, args=("b", "a")),
    ]
    with accounts_pinned(engine, ["a", "b"], waiters=2):
        for t in threads:
            t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["PARENT_CYCLE", "linked"]
    parents = {name: client.get_account(name).account.parent_account_id for name in ("a", "b")}
    assert "" in parents.values()
