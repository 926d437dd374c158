"""Use cases for accounts: create, update, get, list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from billing_service.domain.errors import AlreadyExists, InvalidField, NotFound, ParentCycle
from billing_service.domain.model import Account, BillingMode
from billing_service.domain.validation import check_id, check_metadata, check_optional_id
from billing_service.service_layer.context import AppContext
from billing_service.service_layer.idempotency import Outcome, run_idempotent
from billing_service.service_layer.pagination import Page, decode_token, encode_token, page_size
from billing_service.service_layer.results import AccountResult
from billing_service.service_layer.unit_of_work import Tx

UPDATABLE = frozenset(
    {"billing_mode", "stripe_customer_id", "parent_account_id", "low_balance_threshold", "metadata"}
)


def create_account(
    ctx: AppContext,
    *,
    account_id: str,
    billing_mode: BillingMode | None,
    stripe_customer_id: str,
    parent_id: str,
    low_balance_threshold: int | None,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> Outcome[AccountResult]:
    """Create an account under the caller's id."""
    check_id(account_id, "account.account_id")
    if billing_mode is None:
        raise InvalidField("account.billing_mode", "is required: PREPAID, POSTPAID or HYBRID")
    check_optional_id(stripe_customer_id, "account.stripe_customer_id")
    check_optional_id(parent_id, "account.parent_account_id")
    labels = check_metadata(metadata, "account.metadata")

    def work(tx: Tx, now: datetime) -> AccountResult:
        if tx.accounts.get(account_id) is not None:
            raise AlreadyExists(
                f"account {account_id!r} already exists",
                reason="ACCOUNT_EXISTS",
                account_id=account_id,
            )
        if parent_id and tx.accounts.get(parent_id) is None:
            raise NotFound("ACCOUNT", "account_id", parent_id)
        account = Account(
            id=account_id,
            billing_mode=billing_mode,
            stripe_customer_id=stripe_customer_id,
            parent_id=parent_id,
            low_balance_threshold=low_balance_threshold,
            metadata=labels,
            created_at=now,
            updated_at=now,
        )
        tx.accounts.add(account)
        return AccountResult(account)

    return run_idempotent(
        ctx.db,
        ctx.clock,
        operation="CreateAccount",
        key=idempotency_key,
        request={
            "account_id": account_id,
            "billing_mode": billing_mode,
            "stripe_customer_id": stripe_customer_id,
            "parent_id": parent_id,
            "low_balance_threshold": low_balance_threshold,
            "metadata": labels,
        },
        result_type=AccountResult,
        work=work,
    )


def update_account(
    ctx: AppContext,
    *,
    account_id: str,
    fields: Sequence[str],
    billing_mode: BillingMode | None,
    stripe_customer_id: str,
    parent_id: str,
    low_balance_threshold: int | None,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> Outcome[AccountResult]:
    """Change the named fields of an account."""
    check_id(account_id, "account.account_id")
    if not fields:
        raise InvalidField("update_mask", f"must name at least one of {sorted(UPDATABLE)}")
    unknown = sorted(set(fields) - UPDATABLE)
    if unknown:
        raise InvalidField("update_mask", f"names fields that cannot be updated: {unknown}")
    if "billing_mode" in fields and billing_mode is None:
        raise InvalidField("account.billing_mode", "is required: PREPAID, POSTPAID or HYBRID")
    check_optional_id(stripe_customer_id, "account.stripe_customer_id")
    check_optional_id(parent_id, "account.parent_account_id")
    labels = check_metadata(metadata, "account.metadata")

    def work(tx: Tx, now: datetime) -> AccountResult:
        if "parent_account_id" in fields:
            tx.accounts.lock_hierarchy()
        locked = tx.accounts.lock(account_id)
        if locked is None:
            raise NotFound("ACCOUNT", "account_id", account_id)
        account = locked.account
        changes: dict[str, object] = {"updated_at": now}
        if "billing_mode" in fields:
            changes["billing_mode"] = billing_mode
        if "stripe_customer_id" in fields:
            changes["stripe_customer_id"] = stripe_customer_id
        if "low_balance_threshold" in fields:
            changes["low_balance_threshold"] = low_balance_threshold
        if "metadata" in fields:
            changes["metadata"] = labels
        if "parent_account_id" in fields:
            _check_parent(tx, account_id, parent_id)
            changes["parent_id"] = parent_id
        updated = replace(account, **changes)  # type: ignore[arg-type]
        tx.accounts.save(updated)
        return AccountResult(updated)

    return run_idempotent(
        ctx.db,
        ctx.clock,
        operation="UpdateAccount",
        key=idempotency_key,
        request={
            "account_id": account_id,
            "fields": sorted(fields),
            "billing_mode": billing_mode if "billing_mode" in fields else None,
            "stripe_customer_id": stripe_customer_id if "stripe_customer_id" in fields else None,
            "parent_id": parent_id if "parent_account_id" in fields else None,
            "low_balance_threshold": low_balance_threshold,
            "metadata": labels if "metadata" in fields else None,
        },
        result_type=AccountResult,
        work=work,
    )


def _check_parent(tx: Tx, account_id: str, parent_id: str) -> None:
    """Refuse a parent that does not exist or that would make a cycle."""
    if not parent_id:
        return
    if tx.accounts.get(parent_id) is None:
        raise NotFound("ACCOUNT", "account_id", parent_id)
    seen: set[str] = set()
    ancestor: str | None = parent_id
    while ancestor:
        if ancestor == account_id or ancestor in seen:
            raise ParentCycle(account_id, parent_id)
        seen.add(ancestor)
        ancestor = tx.accounts.parent_of(ancestor)


def get_account(ctx: AppContext, account_id: str) -> Account:
    """One account."""
    check_id(account_id, "account_id")
    account = ctx.db.read(lambda tx: tx.accounts.get(account_id))
    if account is None:
        raise NotFound("ACCOUNT", "account_id", account_id)
    return account


def list_accounts(ctx: AppContext, *, size: int, token: str, parent_id: str) -> Page[Account]:
    """A page of accounts in id order."""
    limit = page_size(size)
    check_optional_id(parent_id, "parent_account_id")
    filters = {"parent": parent_id}
    after = decode_token(token, filters)
    after_id = str(after[0]) if after else ""
    rows = ctx.db.read(
        lambda tx: tx.accounts.page(after_id=after_id, limit=limit + 1, parent_id=parent_id or None)
    )
    items = rows[:limit]
    next_token = encode_token([items[-1].id], filters) if len(rows) > limit else ""
    return Page(items, next_token)
