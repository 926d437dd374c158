"""Domain errors: each carries a stable reason and the metadata a caller needs to act.

The rpc layer alone chooses a gRPC status for each class (rpc/errors.py); nothing here knows
about transports. Hierarchy:

    DomainError
    ├── InvalidField                (bad input; names the field)
    │   ├── IdempotencyKeyReused
    │   └── ParentCycle
    ├── NotFound                    (ACCOUNT_/GRANT_/RESERVATION_/LEDGER_ENTRY_NOT_FOUND)
    ├── AlreadyExists               (ACCOUNT_EXISTS)
    ├── FailedPrecondition          (the state does not allow it now)
    │   └── InsufficientCredits
    └── Unavailable                 (the database cannot be reached; safe to retry)
"""

from __future__ import annotations


class DomainError(Exception):
    """A refusal with a stable machine-readable reason."""

    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = metadata


class InvalidField(DomainError):
    """A request field is malformed, missing or out of range."""

    reason = "INVALID_FIELD"

    def __init__(self, field: str, problem: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field} {problem}", reason=reason, field=field)
        self.field = field
        self.problem = problem


class IdempotencyKeyReused(InvalidField):
    """The idempotency key was already used for a different request."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            "idempotency_key",
            f"was already used for a different {operation} request; use a new key",
            reason="IDEMPOTENCY_KEY_REUSED",
        )


class ParentCycle(InvalidField):
    """Setting this parent would make an account its own ancestor."""

    def __init__(self, account_id: str, parent_id: str) -> None:
        super().__init__(
            "account.parent_account_id",
            f"{parent_id!r} would make {account_id!r} its own ancestor",
            reason="PARENT_CYCLE",
        )


class NotFound(DomainError):
    """The named resource does not exist."""

    def __init__(self, kind: str, key: str, value: str) -> None:
        super().__init__(
            f"{kind.replace('_', ' ').lower()} {value!r} not found",
            reason=f"{kind}_NOT_FOUND",
            **{key: value},
        )


class AlreadyExists(DomainError):
    """The resource the caller tried to create exists already."""

    def __init__(self, message: str, *, reason: str, **metadata: str) -> None:
        super().__init__(message, reason=reason, **metadata)


class FailedPrecondition(DomainError):
    """The request is well-formed but the state it acts on does not allow it."""

    def __init__(self, message: str, *, reason: str, **metadata: str) -> None:
        super().__init__(message, reason=reason, **metadata)


class InsufficientCredits(FailedPrecondition):
    """The account's available balance does not cover the request."""

    def __init__(
        self, account_id: str, *, balance: str, held: str, available: str, required: str
    ) -> None:
        super().__init__(
            f"account {account_id!r} has {available} credits available, {required} required",
            reason="INSUFFICIENT_CREDITS",
            account_id=account_id,
            balance=balance,
            held=held,
            available=available,
            required=required,
        )


class Unavailable(DomainError):
    """A dependency (the database) cannot be reached right now; the call changed nothing."""

    reason = "DATABASE_UNAVAILABLE"


class StripeUnavailable(Unavailable):
    """Stripe could not be reached or failed; nothing was recorded, retry with the same key."""

    reason = "STRIPE_UNAVAILABLE"


def stripe_not_configured(what: str) -> FailedPrecondition:
    """The refusal of a call that needs Stripe when no Stripe key is configured."""
    return FailedPrecondition(
        f"{what} needs Stripe: set STRIPE_SECRET_KEY (and STRIPE_WEBHOOK_SECRET for the gateway)",
        reason="STRIPE_NOT_CONFIGURED",
        setting="STRIPE_SECRET_KEY",
    )
