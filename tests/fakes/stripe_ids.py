"""Stripe-style object ids (`price_1Qx...`, `cs_test_a1...`) for the fake and the event
builders."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """`prefix` followed by `length` random letters and digits, as Stripe's ids look."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))
