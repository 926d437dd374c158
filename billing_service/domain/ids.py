"""Readable, time-ordered identifiers: a prefix naming the kind, then 26 Crockford base32 digits.

The first ten digits are the creation time in milliseconds, so ids sort roughly by age and
index pages stay warm; the rest is 80 random bits.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """A fresh id such as "txn_01jc9x..." for the kind named by prefix (without underscore)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    digits = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        digits.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(digits))}"
