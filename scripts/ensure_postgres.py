"""Make sure the PostgreSQL server the tests use is up, starting the local cluster if needed.

The PostgreSQL half of the suite must never skip silently in CI: when CI=true and the server
cannot be reached or started, this exits non-zero and the test command fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

URL = os.environ.get(
    "CREDITLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def reachable() -> bool:
    """True when a connection to URL succeeds."""
    try:
        with psycopg.connect(URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def start_local_cluster() -> None:
    """Start the Debian-packaged cluster(s) on this machine, if there are any."""
    versions = (
        sorted(p.name for p in Path("/etc/postgresql").glob("*"))
        if Path("/etc/postgresql").is_dir()
        else []
    )
    for version in versions:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            check=False,
        )


def main() -> int:
    if reachable():
        return 0
    print(f"PostgreSQL at {URL} is down; trying to start the local cluster", file=sys.stderr)
    start_local_cluster()
    if reachable():
        return 0
    message = f"PostgreSQL at {URL} cannot be reached; its tests will fail"
    print(message, file=sys.stderr)
    return 1 if os.environ.get("CI") else 0


if __name__ == "__main__":
    sys.exit(main())
