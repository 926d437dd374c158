"""The system under test: a throwaway database and one real `creditline serve` process.

`fresh_postgres_database` creates a uniquely named PostgreSQL database and drops it (WITH
(FORCE)) however the block ends, Ctrl-C included; `sqlite_database` is a file in a temporary
directory. `ServerProcess` runs `creditline serve` on such a database with a clean CREDITLINE_*
environment and a free loopback port, waits for Health/Check to answer SERVING, keeps every
stderr line (the run reports warnings and errors at the end), measures the resident memory of
the server and its descendants from /proc, and is always stopped: SIGTERM, then SIGKILL past a
deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

CREDITLINE = Path(sys.executable).parent / "creditline"
PG_ADMIN_URL = os.environ.get(
    "CREDITLINE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""Ticks per second of /proc's CPU times."""

START_TIMEOUT = 60.0
"""Seconds the server may take to log "serving"."""
STOP_TIMEOUT = 15.0
"""Seconds the server may take to exit after SIGTERM before it is killed."""
MIGRATE_TIMEOUT = 120.0
"""Seconds `creditline migrate` may run."""


class BenchSetupError(RuntimeError):
    """The database or the server could not be brought up; the message says why."""


@contextmanager
def fresh_postgres_database(purpose: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped (connections and all) afterwards."""
    name = f"creditline_bench_{purpose}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        raise BenchSetupError(
            f"PostgreSQL at {PG_ADMIN_URL} is not usable ({str(error).strip()}); "
            "set CREDITLINE_BENCH_POSTGRES_URL"
        ) from error
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_available() -> bool:
    """True when the admin URL accepts a connection."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def sqlite_database() -> Iterator[str]:
    """A SQLAlchemy URL of a SQLite file in a temporary directory removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="creditline-bench-") as workdir:
        yield f"sqlite:///{Path(workdir) / 'creditline.db'}"


def free_loopback_address() -> str:
    """127.0.0.1:PORT with a port the kernel just handed out and that is free again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def server_environment(database_url: str, listen: str, **settings: str) -> dict[str, str]:
    """Our environment minus any CREDITLINE_* leaking in, plus the server's settings.

    settings are CREDITLINE_* variables by their lower-case suffix, e.g. max_workers="96".
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREDITLINE_")}
    env.update(
        CREDITLINE_DATABASE_URL=database_url,
        CREDITLINE_LISTEN=listen,
        CREDITLINE_LOG_FORMAT="json",
    )
    env.update({f"CREDITLINE_{key.upper()}": value for key, value in settings.items()})
    return env


def migrate(env: Mapping[str, str], cwd: Path) -> None:
    """Run `creditline migrate` on the environment's database; raise when it fails."""
    done = subprocess.run(
        [str(CREDITLINE), "migrate"],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise BenchSetupError(f"creditline migrate exited {done.returncode}:\n{done.stderr}")


def serve_supports_workers() -> bool:
    """True when `creditline serve --help` offers a --workers option."""
    done = subprocess.run(
        [str(CREDITLINE), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--workers" in done.stdout


class ServerProcess:
    """One running `creditline serve`, its stderr collected line by line as it comes."""

    def __init__(self, args: list[str], env: Mapping[str, str], cwd: Path) -> None:
        """Start the server; a daemon thread drains stderr so the pipe never fills."""
        self.args = [str(CREDITLINE), "serve", *args]
        self._proc = subprocess.Popen(
            self.args,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._lock = threading.Lock()
        self._lines: list[str] = []
        assert self._proc.stderr is not None
        self._reader = threading.Thread(target=self._drain, args=(self._proc.stderr,), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while the server runs."""
        return self._proc.poll()

    def wait_until_serving(self, address: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until Health/Check at address answers SERVING; raise if the server exits.

        The "serving" log line cannot be awaited: it is logged at INFO, and the benchmark
        runs the server at WARNING so that the per-RPC access log stays off.
        """
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while self._proc.poll() is None and time.monotonic() < deadline:
                try:
                    answer = check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                except grpc.RpcError:
                    time.sleep(0.1)
                    continue
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                time.sleep(0.1)
        state = "timed out" if self._proc.poll() is None else f"exited {self._proc.poll()}"
        raise BenchSetupError(f"creditline serve {state} before serving:\n{self.stderr_text()}")

    def stderr_text(self) -> str:
        """Everything the server wrote to stderr so far."""
        with self._lock:
            return "\n".join(self._lines)

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records so far; non-JSON lines (tracebacks) come back as messages."""
        with self._lock:
            lines = list(self._lines)
        return [_as_record(line) or {"level": "RAW", "message": line} for line in lines]

    def rss_bytes(self) -> int:
        """Resident memory of the server and every process below it, in bytes (0 once gone)."""
        return sum(_status_kib(pid, "VmRSS") for pid in _process_tree(self.pid)) * 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server and every process below it, in seconds."""
        return sum(_cpu_ticks(pid) for pid in _process_tree(self.pid)) / CLOCK_TICKS

    def peak_rss_bytes(self) -> int:
        """The high-water mark of resident memory (VmHWM) summed over the process tree."""
        return sum(_status_kib(pid, "VmHWM") for pid in _process_tree(self.pid)) * 1024

    def stop(self) -> int:
        """SIGTERM unless it has exited, wait, SIGKILL past the deadline; the exit status."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(STOP_TIMEOUT)
        return self._proc.returncode

    def __enter__(self) -> ServerProcess:
        """Return the server itself."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop the server whatever happened in the block."""
        self.stop()

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self._lines.append(line.rstrip("\n"))
        stream.close()


def _as_record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _process_tree(root: int) -> list[int]:
    """root and all its descendants, found through /proc/PID/task/TID/children."""
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in children.read_text().split())
            except OSError:
                continue
    return found


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process from /proc/PID/stat, or 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
    return int(fields[11]) + int(fields[12])


def host_cpu_ticks() -> tuple[int, int]:
    """(all, stolen) CPU ticks of this machine so far, from /proc/stat's cpu line.

    Steal is time the hypervisor gave to other guests while ours wanted to run: a share of
    it above a few percent means the machine's figures are lower than its quiet ones.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values[:8]), values[7]


def _status_kib(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status, or 0 when the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0
