"""Describing model usage for estimates, estimate-sized holds and usage-priced commits.

A UsageLine counts one model's tokens, requests or units (line()); a Usage is some lines plus an
optional tier whose base fee applies (usage(), with_tier()). The client's methods that take
usage accept any UsageLike, turned into a Usage by as_usage():

    from creditline.usage import line, usage

    client.estimate_cost(line("openai", "gpt-4o", input_tokens=1200, max_output_tokens=800))
    client.estimate_cost([line("openai", "gpt-4o", input_tokens=1200), line("openai", "o3")])
    client.estimate_cost(usage(line("openai", "gpt-4o", input_tokens=1200), tier="TIER_1A"))

Counts are ints: a float, a bool or a negative count is refused here, before anything is sent,
because a count of tokens is whole and never below zero. Upper limits, and whether the model
or tier exists, are the server's to judge.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeAlias

from creditline.v1 import pricing_pb2

UsageLike: TypeAlias = pricing_pb2.Usage | pricing_pb2.UsageLine | Sequence[pricing_pb2.UsageLine]
"""Usage as the client accepts it: a Usage, one UsageLine, or a sequence of UsageLines."""


def line(
    provider: str,
    model: str,
    *,
    input_tokens: int = 0,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    output_tokens: int = 0,
    reasoning_tokens: int = 0,
    requests: int = 0,
    units: int = 0,
    max_output_tokens: int | None = None,
) -> pricing_pb2.UsageLine:
    """One model's usage: counted, or expected with max_output_tokens for an estimate.

    With max_output_tokens, an estimate gives a minimum (no output), an expected case
    (output_tokens, or half the maximum when 0) and a maximum, and a hold is sized at the
    maximum; actual usage passed to a commit must not set it.
    """
    if not provider:
        raise ValueError("provider is required, such as 'openai'")
    if not model:
        raise ValueError("model is required, such as 'gpt-4o'")
    return pricing_pb2.UsageLine(
        provider=provider,
        model=model,
        input_tokens=_count(input_tokens, "input_tokens"),
        cached_input_tokens=_count(cached_input_tokens, "cached_input_tokens"),
        cache_write_tokens=_count(cache_write_tokens, "cache_write_tokens"),
        output_tokens=_count(output_tokens, "output_tokens"),
        reasoning_tokens=_count(reasoning_tokens, "reasoning_tokens"),
        requests=_count(requests, "requests"),
        units=_count(units, "units"),
        max_output_tokens=(
            None if max_output_tokens is None else _count(max_output_tokens, "max_output_tokens")
        ),
    )


def usage(
    *lines: pricing_pb2.UsageLine | Iterable[pricing_pb2.UsageLine],
    tier: str = "",
    tier_quantity: int = 0,
) -> pricing_pb2.Usage:
    """What a run consumes: the given lines, each one alone or in a list, plus an optional tier.

    usage(a, b), usage([a, b]) and usage(a, [b]) are the same. tier_quantity is how many units
    of work the tier's base fee is charged for; the server counts 0 as 1 when a tier is set.
    """
    flat: list[pricing_pb2.UsageLine] = []
    for item in lines:
        if isinstance(item, pricing_pb2.UsageLine):
            flat.append(item)
        else:
            flat.extend(_lines(item, "usage"))
    return pricing_pb2.Usage(
        lines=flat, tier=tier, tier_quantity=_count(tier_quantity, "tier_quantity")
    )


def with_tier(value: UsageLike, tier: str, tier_quantity: int = 0) -> pricing_pb2.Usage:
    """A copy of value charged the tier's base fee tier_quantity times (once when 0).

    Usage that names a tier already is a ValueError, so a tier is never silently replaced.
    """
    if not tier:
        raise ValueError("tier must not be empty")
    base = as_usage(value)
    if base.tier:
        raise ValueError(f"the usage names tier {base.tier!r} already; give the tier once")
    return pricing_pb2.Usage(
        lines=base.lines, tier=tier, tier_quantity=_count(tier_quantity, "tier_quantity")
    )


def as_usage(value: UsageLike, name: str = "usage") -> pricing_pb2.Usage:
    """A new Usage message for any UsageLike; anything else is a TypeError naming the argument.

    A Usage is copied, so changing it afterwards cannot change a hold made from it.
    """
    if isinstance(value, pricing_pb2.Usage):
        copy = pricing_pb2.Usage()
        copy.CopyFrom(value)
        return copy
    if isinstance(value, pricing_pb2.UsageLine):
        return pricing_pb2.Usage(lines=[value])
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a Usage, a UsageLine or a sequence of UsageLines")
    return pricing_pb2.Usage(lines=_lines(value, name))


def _lines(items: Iterable[object], name: str) -> list[pricing_pb2.UsageLine]:
    """The items as a list of UsageLines; any other item is a TypeError."""
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise TypeError(f"{name} takes UsageLines or lists of them, not {type(items).__name__}")
    found: list[pricing_pb2.UsageLine] = []
    for item in items:
        if not isinstance(item, pricing_pb2.UsageLine):
            raise TypeError(f"{name} takes UsageLines, not {type(item).__name__}")
        found.append(item)
    return found


def _count(value: int, name: str) -> int:
    """A whole, non-negative count; float and bool are refused rather than rounded or read."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value
