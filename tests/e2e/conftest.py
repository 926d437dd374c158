"""Real `creditline` processes for the end-to-end tests, and grpcurl to drive them.

ServerProcess runs one `creditline` command with a clean CREDITLINE_* environment. Background
threads read its stdout and stderr (JSON log lines) so the pipes never fill, and a test waits
for a log line under a deadline instead of sleeping. Every process is stopped (SIGTERM, then
SIGKILL past the deadline) and reaped, whatever the test did.

The module-scoped servers run `creditline serve` once per test module: on a fresh SQLite file,
and on a fresh PostgreSQL database of their own (the session database of the root conftest is
truncated between tests), created here, migrated by `creditline migrate` and dropped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from tests.conftest import PG_ADMIN_URL, _pg_unavailable

BIN = Path(sys.executable).parent
CREDITLINE = BIN / "creditline"
GRPCURL = BIN / "grpcurl"

START_TIMEOUT = 30.0
"""Seconds a server may take to log "serving" (a cold PostgreSQL connection included)."""
STOP_TIMEOUT = 15.0
"""Seconds a process may take to exit after SIGTERM before it is killed."""
COMMAND_TIMEOUT = 60.0
"""Seconds a one-shot command (migrate, token, grpcurl) may run before it is killed."""

SERVICE = "creditline.v1.CreditService"

LogRecord = dict[str, Any]


def creditline_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a creditline process: ours, minus any CREDITLINE_* leaking in.

    settings are extra CREDITLINE_* variables by their lower-case suffix, e.g.
    auth_tokens="...".
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREDITLINE_")}
    env.update(
        CREDITLINE_LISTEN="127.0.0.1:0",
        CREDITLINE_DATABASE_URL=database_url,
        CREDITLINE_LOG_FORMAT="json",
        CREDITLINE_LOG_LEVEL="INFO",
    )
    env.update({f"CREDITLINE_{key.upper()}": value for key, value in settings.items()})
    return env


class ServerProcess:
    """One running `creditline` command whose output is collected as it comes."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        """Start the command; its output is read by two daemon threads."""
        self.args = [str(CREDITLINE), *args]
        self._proc = subprocess.Popen(
            self.args,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._changed = threading.Condition()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._stderr_closed = False
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._drain, args=(self._proc.stdout, self._stdout, False)),
            threading.Thread(target=self._drain, args=(self._proc.stderr, self._stderr, True)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    @property
    def pid(self) -> int:
        """The process id."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while the process runs."""
        return self._proc.poll()

    @property
    def address(self) -> str:
        """host:port from the "serving" log line."""
        return str(self.wait_for_log(lambda r: r.get("message") == "serving")["address"])

    def stderr_text(self) -> str:
        """Everything the process wrote to stderr so far."""
        with self._changed:
            return "\n".join(self._stderr)

    def records(self) -> list[LogRecord]:
        """The JSON log records written to stderr so far, in order; other lines are skipped."""
        with self._changed:
            lines = list(self._stderr)
        return [record for record in map(_as_record, lines) if record is not None]

    def messages(self) -> list[str]:
        """The message of every log record so far, in order."""
        return [str(record.get("message")) for record in self.records()]

    def wait_for_log(
        self, predicate: Callable[[LogRecord], bool], timeout: float = START_TIMEOUT
    ) -> LogRecord:
        """The first log record matching predicate, waiting for it up to timeout seconds.

        Fails at once when stderr closes (the process exited) without such a record.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for record in map(_as_record, self._stderr):
                    if record is not None and predicate(record):
                        return record
                if self._stderr_closed:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
        state = "timed out" if self._proc.poll() is None else f"exited {self._proc.poll()}"
        raise AssertionError(
            f"{' '.join(self.args)} {state} before logging the awaited line; stderr:\n"
            + self.stderr_text()
        )

    def wait_for_line(self, text: str, timeout: float = START_TIMEOUT) -> str:
        """The first stderr line containing text (for processes that log plain text, like the
        gateway), waiting for it up to timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._stderr:
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if self._stderr_closed or remaining <= 0:
                    break
                self._changed.wait(remaining)
        raise AssertionError(
            f"{' '.join(self.args)} never logged {text!r}; stderr:\n" + self.stderr_text()
        )

    def wait(self, timeout: float = COMMAND_TIMEOUT) -> int:
        """Wait for the process to exit by itself; kill it and fail past the timeout."""
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"{' '.join(self.args)} did not exit within {timeout}s; stderr:\n"
                + self.stderr_text()
            ) from None
        self._join_readers()
        return code

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send sig unless it has exited, wait, kill it past the timeout; the exit status."""
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._join_readers()
        return self._proc.returncode

    def __enter__(self) -> ServerProcess:
        """Return the process itself."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop the process whatever happened in the block."""
        self.stop()

    def _drain(self, stream: IO[str], sink: list[str], is_stderr: bool) -> None:
        for line in stream:
            with self._changed:
                sink.append(line.rstrip("\n"))
                self._changed.notify_all()
        stream.close()
        if is_stderr:
            with self._changed:
                self._stderr_closed = True
                self._changed.notify_all()

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(STOP_TIMEOUT)


def _as_record(line: str) -> LogRecord | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def run_creditline(
    args: Sequence[str], env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot creditline command to completion (killed past COMMAND_TIMEOUT)."""
    return subprocess.run(
        [str(CREDITLINE), *args],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


@contextmanager
def serving(env: Mapping[str, str], cwd: Path) -> Iterator[ServerProcess]:
    """`creditline serve` until the block ends; it must have logged "serving" first.

    After a block that did not raise, the server must also shut down cleanly on SIGTERM.
    """
    with ServerProcess(["serve"], env, cwd) as server:
        server.wait_for_log(lambda r: r.get("message") == "serving")
        yield server
        code = server.stop()
        assert code == 0, f"serve exited {code} on SIGTERM; stderr:\n{server.stderr_text()}"


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped (connections and all) afterwards."""
    name = f"creditline_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        _pg_unavailable(str(error).strip())
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`creditline serve` on a fresh SQLite file, for the whole module."""
    workdir = tmp_path_factory.mktemp("sqlite-server")
    with serving(creditline_env(f"sqlite:///{workdir / 'creditline.db'}"), workdir) as server:
        yield server


@pytest.fixture(scope="module")
def postgresql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`creditline serve` on a fresh PostgreSQL database migrated by `creditline migrate`."""
    workdir = tmp_path_factory.mktemp("postgresql-server")
    with fresh_postgres_database() as url:
        env = creditline_env(url)
        migrated = run_creditline(["migrate"], env, workdir)
        assert migrated.returncode == 0, migrated.stderr
        assert "database schema is current" in migrated.stderr
        with serving(env, workdir) as server:
            yield server


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def server_process(request: pytest.FixtureRequest) -> ServerProcess:
    """The module's server process on each database."""
    server: ServerProcess = request.getfixturevalue(f"{request.param}_server")
    return server


@dataclass(frozen=True)
class GrpcError:
    """A failed grpcurl call: its exit status and the google.rpc.Status it printed as JSON."""

    exit_code: int
    code: int
    message: str
    details: list[dict[str, Any]]

    def error_info(self) -> dict[str, Any]:
        """The one google.rpc.ErrorInfo among the details."""
        infos = [d for d in self.details if d["@type"].endswith("/google.rpc.ErrorInfo")]
        assert len(infos) == 1, self.details
        return infos[0]


@dataclass(frozen=True)
class Grpcurl:
    """grpcurl pointed at one plaintext server, resolving every type through reflection."""

    address: str
    headers: tuple[str, ...] = ()

    def with_header(self, header: str) -> Grpcurl:
        """The same grpcurl sending one more header ("name: value") on every call."""
        return Grpcurl(self.address, (*self.headers, header))

    def run(
        self,
        *positional: str,
        options: Sequence[str] = (),
        request: Mapping[str, Any] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `grpcurl OPTIONS ADDRESS POSITIONAL...`; request, when given, goes in on stdin."""
        argv = [str(GRPCURL), "-plaintext", "-max-time", "20", *options]
        for header in self.headers:
            argv += ["-H", header]
        if request is not None:
            argv += ["-d", "@"]
        return subprocess.run(
            [*argv, self.address, *positional],
            input=json.dumps(request) if request is not None else None,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def call(self, method: str, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Call method ("Service/Method", or a CreditService method name); the JSON answer."""
        result = self.run(_full_method(method), request=request if request is not None else {})
        assert result.returncode == 0, f"grpcurl {method} failed:\n{result.stderr}"
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    def fail(self, method: str, request: Mapping[str, Any] | None = None) -> GrpcError:
        """Call method expecting an error; the status grpcurl printed with -format-error.

        grpcurl 1.8 prints that JSON status on stderr (not stdout) and exits 64 + the code.
        """
        result = self.run(
            _full_method(method),
            options=["-format-error"],
            request=request if request is not None else {},
        )
        assert result.returncode != 0, f"grpcurl {method} unexpectedly succeeded:\n{result.stdout}"
        status = json.loads(result.stderr)
        return GrpcError(
            exit_code=result.returncode,
            code=int(status["code"]),
            message=str(status["message"]),
            details=list(status.get("details", [])),
        )


def _full_method(method: str) -> str:
    return method if "/" in method else f"{SERVICE}/{method}"
