"""What is sold: credit packages and subscription plans, and how a plan renews its allowance.

Prices are integer minor units (cents for USD), as Stripe counts them; credits are
micro-credits. A plan's allowance is monthly even when it is paid yearly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from billing_service.domain.errors import InvalidField

_ID = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}", re.ASCII)
_LOOKUP_KEY = re.compile(r"[A-Za-z0-9_\-.:]{1,200}", re.ASCII)
_CURRENCY = re.compile(r"[a-z]{3}", re.ASCII)
MAX_UNIT_AMOUNT = 99_999_999  # Stripe's limit for unit_amount


class RenewalPolicy(StrEnum):
    """What a new allowance period does with the credits left from the last one."""

    RESET = "RESET"
    ROLLOVER = "ROLLOVER"
    ADD = "ADD"


class Interval(StrEnum):
    """How often a plan is paid for."""

    MONTH = "MONTH"
    YEAR = "YEAR"


@dataclass(frozen=True)
class CreditPackage:
    """A one-time purchase of a fixed number of credits."""

    id: str
    name: str
    credits: int
    unit_amount: int
    currency: str
    lookup_key: str
    stripe_product_id: str = ""
    stripe_price_id: str = ""
    active: bool = True


@dataclass(frozen=True)
class Plan:
    """A subscription with a monthly allowance of credits."""

    id: str
    name: str
    interval: Interval
    monthly_credits: int
    unit_amount: int
    currency: str
    renewal_policy: RenewalPolicy
    rollover_cap: int | None
    lookup_key: str
    stripe_product_id: str = ""
    stripe_price_id: str = ""
    active: bool = True


CatalogItem = CreditPackage | Plan


@dataclass(frozen=True)
class Renewal:
    """What starting an allowance period does: credits expired, carried and granted."""

    expire: int
    carry: int
    grant: int


def renew(plan: Plan, left: int) -> Renewal:
    """Apply the plan's renewal policy to `left`, the unheld credits of the last period.

    RESET expires them and grants the plan amount; ROLLOVER carries up to the cap (expiring
    the rest) and grants the plan amount on top; ADD keeps them and adds the plan amount.
    """
    if plan.renewal_policy is RenewalPolicy.RESET:
        return Renewal(expire=left, carry=0, grant=plan.monthly_credits)
    if plan.renewal_policy is RenewalPolicy.ROLLOVER:
        cap = plan.monthly_credits if plan.rollover_cap is None else plan.rollover_cap
        carry = min(left, cap)
        return Renewal(expire=left - carry, carry=carry, grant=plan.monthly_credits)
    return Renewal(expire=0, carry=0, grant=plan.monthly_credits)


def check_item(item: CatalogItem, where: str) -> None:
    """Refuse a catalog entry that could not be sold, naming the field."""
    if not _ID.fullmatch(item.id):
        raise InvalidField(f"{where}.id", "must be 1-64 of a-z, 0-9, '_' and '-'")
    if not item.name.strip() or len(item.name) > 200:
        raise InvalidField(f"{where}.name", "must be 1-200 characters")
    if not _LOOKUP_KEY.fullmatch(item.lookup_key):
        raise InvalidField(f"{where}.lookup_key", "must be 1-200 of A-Z, a-z, 0-9, _-.:")
    if not _CURRENCY.fullmatch(item.currency):
        raise InvalidField(f"{where}.currency", "must be a lower-case ISO code such as usd")
    if not 0 < item.unit_amount <= MAX_UNIT_AMOUNT:
        raise InvalidField(f"{where}.unit_amount", f"must be 1 to {MAX_UNIT_AMOUNT} minor units")
    credits = item.credits if isinstance(item, CreditPackage) else item.monthly_credits
    if credits <= 0:
        raise InvalidField(f"{where}.credits", "must be more than zero")
    if isinstance(item, Plan) and item.rollover_cap is not None:
        if item.renewal_policy is not RenewalPolicy.ROLLOVER:
            raise InvalidField(f"{where}.rollover_cap", "applies only to ROLLOVER plans")
        if item.rollover_cap < 0:
            raise InvalidField(f"{where}.rollover_cap", "must not be negative")
