"""Creditline's benchmark: one command, a real server, separate load generators, one table.

    .venv/bin/python bench/run.py [--database postgresql|sqlite] [--rounds 3] [--duration 4]
        [--warmup 1] [--concurrency 1,16,64] [--scenarios health,spend_many,...]
        [--processes 4] [--accounts 1000] [--json bench/results.json] [--workers N]
        [--soak SECONDS]

It creates a fresh database (a uniquely named PostgreSQL database, or a SQLite file), runs
`creditline migrate`, starts `creditline serve` as its own process, creates and funds the
accounts through the API, then measures every scenario at every concurrency, round after round,
from load-generator processes of its own (loadgen.py). The raw psycopg baseline runs in the same
run on PostgreSQL. Progress goes to stderr; the table and the targets go to stdout; everything
measured goes to the JSON file. The database is dropped and the server stopped however the run
ends, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import environment
import grpc
import loadgen
import psycopg
import report
import scenarios

DEFAULT_CONCURRENCY = "1,16,64"
DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"
SOAK_SLICE_SECONDS = 20.0
"""Length of one soak slice: the server's RSS is read after each."""
SOAK_SCENARIOS = ("spend_many", "reserve_commit", "get_balance", "spend_hot", "estimate_cost")
SOAK_GROWTH_LIMIT = 0.10
"""The memory target: RSS may grow at most 10 % over the soak, from the end of its first cycle."""
PROBLEM_LEVELS = ("WARNING", "ERROR", "CRITICAL", "RAW")
"""Server log levels reported at the end; RAW is a line that is not JSON (a traceback)."""
CONNECTION_MARGIN = 4
"""PostgreSQL connections left free for others (admin sessions, psql, tests) when sizing."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark creditline serve against Health/Check and a raw psycopg debit.",
    )
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--rounds", type=_positive, default=3, help="rounds (medians are taken)")
    parser.add_argument(
        "--duration",
        type=float,
        default=4.0,
        help="measured seconds per cell (default 4: a default run takes about 6.5 minutes)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=_int_list(DEFAULT_CONCURRENCY),
        help=f"comma-separated client counts (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--scenarios",
        type=_scenario_list,
        default=[s.name for s in scenarios.SCENARIOS],
        help="comma-separated, from: " + ",".join(s.name for s in scenarios.SCENARIOS),
    )
    parser.add_argument(
        "--processes", type=_positive, default=4, help="load-generator processes (default 4)"
    )
    parser.add_argument(
        "--accounts", type=_positive, default=1000, help="accounts for the many-account scenarios"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help="where to write every figure (default bench/results.json, git-ignored)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        help="server worker processes, passed as `serve --workers` when serve offers it",
    )
    parser.add_argument(
        "--soak",
        type=float,
        default=0.0,
        help="after the cells, drive a mix of scenarios at the highest concurrency for this many "
        "seconds and report the server's RSS growth (600 for the 10-minute soak; default off)",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _int_list(text: str) -> list[int]:
    return [_positive(part) for part in text.split(",") if part.strip()]


def _scenario_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in scenarios.BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario(s): {', '.join(unknown)}")
    return [s.name for s in scenarios.SCENARIOS if s.name in names]


class Progress:
    """Timestamped progress lines on stderr."""

    def __init__(self) -> None:
        """Start the clock."""
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC).isoformat()

    @property
    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.started

    def __call__(self, message: str) -> None:
        """Print one line."""
        minutes, seconds = divmod(int(self.elapsed), 60)
        print(f"[{minutes:2d}:{seconds:02d}] {message}", file=sys.stderr, flush=True)


class RssSampler:
    """Samples the server's resident memory every SAMPLE_SECONDS while the block runs."""

    SAMPLE_SECONDS = 0.2

    def __init__(self, server: environment.ServerProcess) -> None:
        """Remember the server; sampling starts on __enter__."""
        self._server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak = 0

    def __enter__(self) -> RssSampler:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        """Stop sampling and take one last sample."""
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._server.rss_bytes())

    def _sample(self) -> None:
        while not self._stop.wait(self.SAMPLE_SECONDS):
            self.peak = max(self.peak, self._server.rss_bytes())


def _pool_size(max_clients: int, baseline_shares_server: bool, processes: int) -> tuple[int, str]:
    """CREDITLINE_DB_POOL_SIZE for PostgreSQL, within what max_connections leaves free.

    SQLAlchemy keeps pool_size connections open and may open as many again (max_overflow),
    so each server process holds at most 2 x pool_size; with `--workers N` every process has
    a pool of its own. The open ones stay open while the baseline's max_clients connections run
    beside them, so both must fit in max_connections.
    """
    with psycopg.connect(environment.PG_ADMIN_URL, connect_timeout=5) as admin:
        row = admin.execute(
            "SELECT current_setting('max_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        ).fetchone()
    assert row is not None
    limit, in_use = int(row[0]), int(row[1]) - 1  # this admin session closes before the load
    spare = limit - in_use - CONNECTION_MARGIN - (max_clients if baseline_shares_server else 0)
    size = max(2, min(max_clients, spare) // processes)
    held = 2 * size * processes
    note = (
        f"CREDITLINE_DB_POOL_SIZE={size} per server process x {processes} (the server may hold "
        f"up to {held} connections): max_connections={limit}, {in_use} in use at start"
        + (f", {max_clients} kept free for the baseline" if baseline_shares_server else "")
    )
    if held < max_clients:
        note += f"; fewer than {max_clients}, so some calls wait for a connection"
    return size, note


def _probe(server: environment.ServerProcess) -> loadgen.Probe:
    """Server CPU seconds, and the machine's CPU and stolen ticks."""

    def read() -> tuple[float, ...]:
        return (server.cpu_seconds(), *environment.host_cpu_ticks())

    return read


def _record(
    plan: loadgen.CellPlan,
    round_number: int,
    measured: loadgen.Measurement,
    rss: tuple[int, int],
    *,
    baseline: bool,
) -> report.CellRecord:
    after, peak = rss
    cpu_us = steal = None
    if measured.probed is not None:
        server_cpu, host_all, host_stolen = measured.probed
        if not baseline and measured.completed:
            cpu_us = server_cpu / measured.completed * 1e6
        steal = host_stolen / host_all * 100 if host_all else None
    return report.CellRecord(
        scenario=plan.scenario,
        concurrency=plan.concurrency,
        round=round_number,
        rate=measured.rate,
        completed=measured.completed,
        errors=dict(measured.errors),
        p50_ms=measured.percentile_ms(0.50),
        p99_ms=measured.percentile_ms(0.99),
        p999_ms=measured.percentile_ms(0.999),
        max_ms=measured.percentile_ms(1.0),
        rss_after_mb=after / 2**20 if after else None,
        rss_peak_mb=peak / 2**20 if peak else None,
        cpu_us_per_op=cpu_us,
        steal_pct=steal,
    )


def _server_problems(server: environment.ServerProcess) -> list[dict[str, Any]]:
    """The server's warning-or-worse log messages, counted, most frequent first."""
    counts = Counter(
        (str(record.get("level")), str(record.get("message")))
        for record in server.records()
        if record.get("level") in PROBLEM_LEVELS
    )
    return [
        {"level": level, "message": message, "count": count}
        for (level, message), count in counts.most_common()
    ]


@dataclass
class Plan:
    """What this run measures and against what, settled before the server starts."""

    scenarios: list[str]
    database_url: str
    baseline_url: str | None
    settings: dict[str, str]
    serve_args: list[str]
    notes: list[str]


def _plan(args: argparse.Namespace, stack: ExitStack, progress: Progress) -> Plan:
    """Create the databases (dropped by stack) and choose the server's settings."""
    notes = [
        "server runs with CREDITLINE_LOG_LEVEL=WARNING: the per-RPC access log (INFO) is off, "
        "as writing it would dominate the figures; its INFO 'serving' line is therefore not "
        "logged, so the bench picks a free loopback port and waits for Health/Check SERVING",
        f"load generators: {args.processes} spawned processes, clients split evenly between "
        "them (1 client: one process, one thread); each client has its own channel/connection",
        "EstimateCost is driven without an account_id (price book only, no balance read)",
        "ratios are medians over rounds of each round's ratio; the issue's targets are judged "
        "on PostgreSQL at 64 clients, medians of at least 3 rounds",
    ]
    chosen = list(args.scenarios)
    max_clients = max(args.concurrency)
    wants_baseline = any(scenarios.BY_NAME[name].baseline for name in chosen)
    serve_args: list[str] = []
    if args.workers is not None:
        if environment.serve_supports_workers():
            serve_args = ["--workers", str(args.workers)]
            notes.append(
                f"server runs as `serve --workers {args.workers}`: RSS is the sum over the "
                "supervisor and its worker processes"
            )
        else:
            notes.append(
                f"--workers {args.workers} ignored: `creditline serve --help` offers no "
                "--workers option, so the server runs as one process"
            )
    server_processes = args.workers if serve_args else 1
    baseline_url: str | None = None
    if args.database == "postgresql":
        progress("creating a fresh PostgreSQL database")
        database_url = stack.enter_context(environment.fresh_postgres_database("server"))
        baseline_url = database_url
        pool_size, pool_note = _pool_size(max_clients, wants_baseline, server_processes)
        notes.append(pool_note)
    else:
        database_url = stack.enter_context(environment.sqlite_database())
        pool_size = max_clients
        notes.append(f"CREDITLINE_DB_POOL_SIZE={pool_size} on SQLite")
        if wants_baseline and environment.postgres_available():
            baseline_url = stack.enter_context(environment.fresh_postgres_database("baseline"))
            notes.append(
                "--database sqlite: the raw psycopg baseline still runs on PostgreSQL "
                "(a database of its own), since it is a PostgreSQL baseline by definition"
            )
        elif wants_baseline:
            chosen = [name for name in chosen if not scenarios.BY_NAME[name].baseline]
            notes.append("PostgreSQL is unreachable: the raw psycopg baseline was skipped")
    settings = {
        "log_level": "WARNING",
        "max_workers": str(max(64, max_clients) + 16),
        "db_pool_size": str(pool_size),
    }
    return Plan(chosen, database_url, baseline_url, settings, serve_args, notes)


def _fixture(
    args: argparse.Namespace, plan: Plan, address: str, progress: Progress
) -> scenarios.Fixture:
    """Accounts, estimate and baseline tables; every scenario is then called once."""
    progress(f"creating and funding {args.accounts} accounts and one hot account")
    ids, hot = scenarios.create_accounts(address, args.accounts)
    estimate, estimate_note = scenarios.choose_estimate(address)
    plan.notes.append(estimate_note)
    if plan.baseline_url is not None:
        scenarios.prepare_baseline(plan.baseline_url, ids, hot)
    fixture = scenarios.Fixture(
        address=address,
        account_ids=ids,
        hot_account_id=hot,
        estimate_request=estimate.SerializeToString(),
        baseline_url=plan.baseline_url,
    )
    for name in plan.scenarios:
        with scenarios.open_operation(name, fixture) as operation:
            operation()
    progress("every scenario answered once")
    return fixture


def _measure(
    args: argparse.Namespace,
    plan: Plan,
    server: environment.ServerProcess,
    generators: loadgen.LoadGenerators,
    progress: Progress,
) -> list[report.CellRecord]:
    """Every scenario at every concurrency, round after round, with a progress line each."""
    records: list[report.CellRecord] = []
    total = args.rounds * len(args.concurrency) * len(plan.scenarios)
    for round_number in range(1, args.rounds + 1):
        for clients in args.concurrency:
            for name in plan.scenarios:
                if server.returncode is not None:
                    raise environment.BenchSetupError(
                        f"the server exited {server.returncode} during the run:\n"
                        + server.stderr_text()[-4000:]
                    )
                scenario = scenarios.BY_NAME[name]
                cell = loadgen.CellPlan(name, clients, args.warmup, args.duration)
                sampler = RssSampler(server)
                with nullcontext() if scenario.baseline else sampler:
                    measured = generators.run(cell, _probe(server))
                rss = (0, 0) if scenario.baseline else (server.rss_bytes(), sampler.peak)
                record = _record(cell, round_number, measured, rss, baseline=scenario.baseline)
                records.append(record)
                progress(
                    f"{len(records):>3}/{total} round {round_number}/{args.rounds} "
                    f"{clients:>3} clients  {scenario.label:<32} "
                    f"{record.rate:>9.1f} {scenario.unit}/s  "
                    f"p99 {report.fmt(record.p99_ms)} ms  "
                    f"errors {sum(record.errors.values())}"
                    + (f"  RSS {rss[1] / 2**20:.0f} MB" if rss[1] else "")
                    + (f"  CPU {record.cpu_us_per_op:.0f} us/op" if record.cpu_us_per_op else "")
                    + f"  steal {report.fmt(record.steal_pct, 0)}%"
                )
    return records


def _soak(
    args: argparse.Namespace,
    plan: Plan,
    server: environment.ServerProcess,
    generators: loadgen.LoadGenerators,
    progress: Progress,
) -> dict[str, Any]:
    """Drive the scenarios in turn, slice after slice, for args.soak seconds; RSS after each.

    Growth is judged from the end of the first full cycle (caches warm, pools filled) to the
    end of the soak.
    """
    cycle = [name for name in SOAK_SCENARIOS if name in plan.scenarios] or ["spend_many"]
    clients = max(args.concurrency)
    started = time.monotonic()
    slices: list[dict[str, Any]] = []
    while time.monotonic() - started < args.soak:
        name = cycle[len(slices) % len(cycle)]
        measured = generators.run(loadgen.CellPlan(name, clients, 0.0, SOAK_SLICE_SECONDS))
        rss_mb = server.rss_bytes() / 2**20
        slices.append(
            {
                "elapsed_s": round(time.monotonic() - started, 1),
                "scenario": name,
                "rate": measured.rate,
                "rss_mb": round(rss_mb, 1),
            }
        )
        progress(
            f"soak {slices[-1]['elapsed_s']:>6.0f}/{args.soak:.0f}s  "
            f"{scenarios.BY_NAME[name].label:<32} {measured.rate:>9.1f}/s  RSS {rss_mb:.0f} MB"
        )
    warm = slices[min(len(cycle), len(slices)) - 1]["rss_mb"]
    end = slices[-1]["rss_mb"]
    growth = (end - warm) / warm if warm else 0.0
    return {
        "seconds": args.soak,
        "clients": clients,
        "slices": slices,
        "rss_warm_mb": warm,
        "rss_end_mb": end,
        "rss_max_mb": max(s["rss_mb"] for s in slices),
        "growth": round(growth, 4),
        "verdict": "PASS" if growth <= SOAK_GROWTH_LIMIT else "MISS",
    }


def run(args: argparse.Namespace, progress: Progress) -> int:
    """Set everything up, measure every cell, print and write the results."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="creditline-bench-")))
        plan = _plan(args, stack, progress)
        address = environment.free_loopback_address()
        env = environment.server_environment(plan.database_url, address, **plan.settings)
        progress("creditline migrate")
        environment.migrate(env, workdir)
        server = stack.enter_context(environment.ServerProcess(plan.serve_args, env, workdir))
        server.wait_until_serving(address)
        progress(f"creditline serve (pid {server.pid}) is serving on {address}")
        fixture = _fixture(args, plan, address, progress)
        for note in plan.notes:
            progress(f"note: {note}")
        generators = stack.enter_context(loadgen.LoadGenerators(args.processes, fixture))
        records = _measure(args, plan, server, generators, progress)
        soak = _soak(args, plan, server, generators, progress) if args.soak > 0 else None
        sampled = [r.rss_peak_mb for r in records if r.rss_peak_mb is not None]
        server_info: dict[str, Any] = {
            "pid": server.pid,
            "address": address,
            "serve_args": plan.serve_args,
            "settings": {f"CREDITLINE_{k.upper()}": v for k, v in plan.settings.items()},
            "rss_peak_sampled_mb": max(sampled, default=None),
            "vm_hwm_mb": server.peak_rss_bytes() / 2**20,
        }
        if soak is not None:
            server_info["soak"] = soak
        progress("stopping the server")
        server_info["exit_code"] = server.stop()
        server_info["log_problems"] = _server_problems(server)
    _report(args, plan, records, server_info, progress)
    return 0


def _report(
    args: argparse.Namespace,
    plan: Plan,
    records: list[report.CellRecord],
    server_info: dict[str, Any],
    progress: Progress,
) -> None:
    """Print the table, the targets and the server's health; write the JSON file."""
    rows = report.summarize(records)
    judged = report.judged_concurrency(args.concurrency)
    targets = report.evaluate_targets(
        rows, clients=judged, database=args.database, rss_peak_mb=server_info["rss_peak_sampled_mb"]
    )
    print()
    print(
        f"Creditline benchmark on {args.database}: {args.rounds} round(s) x {args.duration:g}s "
        f"(+{args.warmup:g}s warm-up) per cell, {os.cpu_count()} CPUs; "
        "figures are medians over rounds"
    )
    print(report.format_table(rows))
    print()
    print(
        "xHealth: rate / Health/Check rate at the same concurrency; p99 xH: p99 / Health p99; "
        "x reference: rate / the named scenario's rate (Reserve+Commit in pairs/s); "
        "CPU us: server CPU time per operation (a pair counts once)."
    )
    steals = [r.steal_pct for r in records if r.steal_pct is not None]
    if steals:
        print(
            f"host CPU steal over the measured windows: median {statistics.median(steals):.0f} %, "
            f"max {max(steals):.0f} % (time the hypervisor gave other guests; when high, "
            "absolute rates are low and the ratios noisier)"
        )
    print()
    print(report.format_targets(targets, judged))
    print()
    print(
        f"server: exit code {server_info['exit_code']} on SIGTERM, peak RSS sampled "
        f"{report.fmt(server_info['rss_peak_sampled_mb'], 0)} MB, "
        f"VmHWM {server_info['vm_hwm_mb']:.0f} MB"
    )
    soak = server_info.get("soak")
    if soak is not None:
        print(
            f"soak: {soak['seconds'] / 60:.1f} min at {soak['clients']} clients, RSS "
            f"{soak['rss_warm_mb']:.0f} MB after the first cycle -> {soak['rss_end_mb']:.0f} MB "
            f"at the end (max {soak['rss_max_mb']:.0f} MB): {soak['growth'] * 100:+.1f} %  "
            f"<= +{SOAK_GROWTH_LIMIT * 100:.0f} %  {soak['verdict']}"
        )
    for problem in server_info["log_problems"]:
        print(f"  server log {problem['level']} x{problem['count']}: {problem['message'][:160]}")
    print("notes:")
    for note in plan.notes:
        print(f"  - {note}")
    meta = {
        "command": [sys.executable, *sys.argv],
        "started_at": progress.started_at,
        "elapsed_s": round(progress.elapsed, 1),
        "database": args.database,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "concurrency": args.concurrency,
        "scenarios": plan.scenarios,
        "processes": args.processes,
        "accounts": args.accounts,
        "judged_at_clients": judged,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "notes": plan.notes,
    }
    report.write_json(
        args.json, meta=meta, records=records, rows=rows, targets=targets, server=server_info
    )
    progress(f"done in {progress.elapsed:.0f}s; results written to {args.json}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; SIGTERM and Ctrl-C both unwind through the clean-up."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    progress = Progress()
    try:
        return run(args, progress)
    except KeyboardInterrupt:
        progress("interrupted; the server was stopped and the database dropped")
        return 130
    except (environment.BenchSetupError, loadgen.LoadError, grpc.RpcError) as error:
        progress(f"failed: {error}")
        return 1


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, through the same clean-up."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
