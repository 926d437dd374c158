"""From measured cells to the printed table, the issue's targets and the JSON document.

Every figure is the median over rounds. Every ratio is the median over rounds of that round's
ratio, both of whose terms were measured minutes apart at most, so a ratio survives a host
that is faster or slower from one round to the next. Targets are judged at 64 clients (the
issue's figure) on these medians and ratios.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scenarios import BY_NAME, SCENARIOS

REFERENCE = {"spend_many": "raw_many", "spend_hot": "raw_hot", "reserve_commit": "spend_many"}
"""The scenario each one's rate is compared with, beside Health/Check."""
JUDGED_AT = 64
"""The concurrency at which the issue's targets are judged."""
RSS_LIMIT_MB = 300.0


@dataclass(frozen=True)
class CellRecord:
    """One scenario at one concurrency in one round: the raw figures."""

    scenario: str
    concurrency: int
    round: int
    rate: float
    completed: int
    errors: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    rss_after_mb: float | None
    """The server's resident memory just after the cell; None for the raw baseline."""
    rss_peak_mb: float | None
    """The highest resident memory sampled during the cell; None for the raw baseline."""
    cpu_us_per_op: float | None = None
    """Server CPU time (user + system, all its processes) per completed operation in the
    measured window, in microseconds; None for the raw baseline."""
    steal_pct: float | None = None
    """The share of the machine's CPU time the hypervisor stole during the window."""


@dataclass
class Summary:
    """One row of the table: medians over rounds and ratios."""

    scenario: str
    concurrency: int
    rounds: int
    rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    errors: int
    rss_peak_mb: float | None
    cpu_us_per_op: float | None = None
    rate_vs_health: float | None = None
    p99_vs_health: float | None = None
    reference: str | None = None
    rate_vs_reference: float | None = None
    per_round_ratios: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets, as measured."""

    name: str
    measured: float | None
    target: str
    passed: bool | None
    """None when a scenario it needs was not run."""
    unit: str = "x"

    @property
    def verdict(self) -> str:
        """PASS, MISS or n/a."""
        return "n/a" if self.passed is None else "PASS" if self.passed else "MISS"


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(records: Sequence[CellRecord]) -> list[Summary]:
    """The table's rows: scenarios in SCENARIOS order, each by rising concurrency."""
    cells: dict[tuple[str, int], list[CellRecord]] = {}
    for record in records:
        cells.setdefault((record.scenario, record.concurrency), []).append(record)
    rates = {(r.scenario, r.concurrency, r.round): r.rate for r in records}
    p99s = {(r.scenario, r.concurrency, r.round): r.p99_ms for r in records}

    def round_ratios(
        table: dict[tuple[str, int, int], Any], scenario: str, other: str, clients: int
    ) -> list[float]:
        ratios = []
        for (name, concurrency, number), value in table.items():
            if name != scenario or concurrency != clients:
                continue
            base = table.get((other, concurrency, number))
            if value is not None and base:
                ratios.append(value / base)
        return ratios

    rows = []
    for (scenario, clients), group in cells.items():
        row = Summary(
            scenario=scenario,
            concurrency=clients,
            rounds=len(group),
            rate=_median(r.rate for r in group),
            p50_ms=_median(r.p50_ms for r in group),
            p99_ms=_median(r.p99_ms for r in group),
            p999_ms=_median(r.p999_ms for r in group),
            errors=sum(sum(r.errors.values()) for r in group),
            rss_peak_mb=max((r.rss_peak_mb for r in group if r.rss_peak_mb), default=None),
            cpu_us_per_op=_median(r.cpu_us_per_op for r in group),
        )
        vs_health = round_ratios(rates, scenario, "health", clients)
        p99_vs_health = round_ratios(p99s, scenario, "health", clients)
        row.rate_vs_health = _median(vs_health)
        row.p99_vs_health = _median(p99_vs_health)
        row.per_round_ratios = {"rate_vs_health": vs_health, "p99_vs_health": p99_vs_health}
        if scenario in REFERENCE:
            row.reference = REFERENCE[scenario]
            vs_reference = round_ratios(rates, scenario, row.reference, clients)
            row.rate_vs_reference = _median(vs_reference)
            row.per_round_ratios["rate_vs_reference"] = vs_reference
        rows.append(row)
    order = [scenario.name for scenario in SCENARIOS]
    return sorted(rows, key=lambda row: (order.index(row.scenario), row.concurrency))


def judged_concurrency(concurrencies: Sequence[int]) -> int:
    """64 when it was measured, otherwise the highest concurrency measured."""
    return JUDGED_AT if JUDGED_AT in concurrencies else max(concurrencies)


def evaluate_targets(
    rows: Sequence[Summary], *, clients: int, database: str, rss_peak_mb: float | None
) -> list[Target]:
    """The issue's targets at the given concurrency."""
    at = {row.scenario: row for row in rows if row.concurrency == clients}

    def ratio(
        name: str, scenario: str, pick: Callable[[Summary], float | None], least: float
    ) -> Target:
        row = at.get(scenario)
        value = pick(row) if row else None
        return Target(name, value, f">= {least:g}x", None if value is None else value >= least)

    targets = [
        ratio("SpendCredits many / Health", "spend_many", lambda r: r.rate_vs_health, 0.6),
        ratio("SpendCredits many / raw many", "spend_many", lambda r: r.rate_vs_reference, 2),
        ratio("SpendCredits hot / Health", "spend_hot", lambda r: r.rate_vs_health, 0.5),
        ratio("SpendCredits hot / raw hot", "spend_hot", lambda r: r.rate_vs_reference, 4),
        ratio("Reserve+Commit pairs / Spend many", "reserve_commit", _vs_reference, 0.5),
        ratio("EstimateCost / Health", "estimate_cost", lambda r: r.rate_vs_health, 0.8),
        ratio("GetBalance / Health", "get_balance", lambda r: r.rate_vs_health, 0.7),
    ]
    for scenario, row in at.items():
        if scenario == "health" or BY_NAME[scenario].baseline:
            continue
        value = row.p99_vs_health
        targets.append(
            Target(
                f"p99 {BY_NAME[scenario].label} / Health p99",
                value,
                "<= 3x",
                None if value is None else value <= 3,
            )
        )
    if database == "sqlite":
        targets.append(
            ratio("SpendCredits on SQLite / Health", "spend_many", lambda r: r.rate_vs_health, 0.5)
        )
    targets.append(
        Target(
            "server RSS under load (peak)",
            rss_peak_mb,
            f"<= {RSS_LIMIT_MB:g} MB",
            None if rss_peak_mb is None else rss_peak_mb <= RSS_LIMIT_MB,
            unit="MB",
        )
    )
    return targets


def _vs_reference(row: Summary) -> float | None:
    return row.rate_vs_reference


def fmt(value: float | None, digits: int = 2) -> str:
    """value rounded to digits decimals, or "-" when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows: Sequence[Summary]) -> str:
    """The figures as a fixed-width table."""
    header = (
        f"{'scenario':<32} {'clients':>7} {'rate/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99.9 ms':>9} {'errors':>6} {'RSS MB':>7} {'CPU us':>7} {'xHealth':>7} {'p99 xH':>7}  "
        f"{'x reference'}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for row in rows:
        if previous is not None and row.scenario != previous:
            lines.append("")
        previous = row.scenario
        scenario = BY_NAME[row.scenario]
        reference = (
            f"{fmt(row.rate_vs_reference)} vs {BY_NAME[row.reference].label}"
            if row.reference
            else ""
        )
        line = (
            f"{scenario.label:<32} {row.concurrency:>7} {fmt(row.rate, 1):>9} "
            f"{fmt(row.p50_ms):>8} {fmt(row.p99_ms):>8} {fmt(row.p999_ms):>9} "
            f"{row.errors:>6} {fmt(row.rss_peak_mb, 0):>7} {fmt(row.cpu_us_per_op, 0):>7} "
            f"{fmt(row.rate_vs_health):>7} "
            f"{fmt(row.p99_vs_health):>7}  {reference}"
        )
        lines.append(line.rstrip())
    return "\n".join(lines)


def format_targets(targets: Sequence[Target], clients: int) -> str:
    """The targets section: measured, target, verdict."""
    note = "" if clients == JUDGED_AT else f" (64 was not measured: judged at {clients})"
    lines = [f"targets at {clients} clients{note}:"]
    for target in targets:
        measured = fmt(target.measured, 0 if target.unit == "MB" else 2)
        suffix = " MB" if target.unit == "MB" else "x"
        shown = measured if measured == "-" else measured + suffix
        lines.append(f"  {target.name:<52} {shown:>10}  {target.target:<10} {target.verdict}")
    return "\n".join(lines)


def write_json(
    path: Path,
    *,
    meta: dict[str, Any],
    records: Sequence[CellRecord],
    rows: Sequence[Summary],
    targets: Sequence[Target],
    server: dict[str, Any],
) -> None:
    """Write every raw figure, median, ratio and target verdict."""
    document = {
        "meta": meta,
        "server": server,
        "cells": [asdict(record) for record in records],
        "summary": [asdict(row) for row in rows],
        "targets": [{**asdict(target), "verdict": target.verdict} for target in targets],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
