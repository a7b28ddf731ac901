"""A real PostgreSQL server on 127.0.0.1 for tests (Debian's `postgresql` package), and a
fresh database in it per test."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from tests.support.sockets import free_port

USER = "rag"  # the superuser initdb creates; trust authentication on loopback
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
_OS_USER = "postgres"  # PostgreSQL refuses to run as root: it runs as Debian's postgres user


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: $RAG_TEST_PG_BIN, else the newest Debian install."""
    if configured := os.environ.get("RAG_TEST_PG_BIN"):
        return Path(configured)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): the key tests "
            "run on a real server; `make services` installs Debian's postgresql"
        )
    return found[-1].parent


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server in a temporary dir under /tmp, listening on 127.0.0.1 only;
    yields its URL (`postgresql://rag@127.0.0.1:PORT/postgres`). Stopped and removed after."""
    bins = bin_dir()
    as_root = os.geteuid() == 0
    # /tmp, not the test's tmp_path: the postgres user must be able to reach the dir.
    root = Path(tempfile.mkdtemp(prefix="ragserve-pg-", dir="/tmp"))
    root.chmod(0o755)
    if as_root:
        try:
            owner = pwd.getpwnam(_OS_USER)
        except KeyError as exc:
            raise RuntimeError(
                f"running as root, but there is no '{_OS_USER}' user to run PostgreSQL as "
                "(Debian's postgresql package creates it)"
            ) from exc
        os.chown(root, owner.pw_uid, owner.pw_gid)
    runner = ["runuser", "-u", _OS_USER, "--"] if as_root else []
    data, log = root / "pg", root / "log"
    try:
        _run(
            [*runner, str(bins / "initdb"), "-D", str(data), "-A", "trust", "-U", USER,
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            "initdb",
        )  # fmt: skip
        port = _start(runner, bins, data, root, log)
        try:
            yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*runner, str(bins / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                 "-t", str(STOP_TIMEOUT_S), "stop"],
                capture_output=True, timeout=STOP_TIMEOUT_S + 10, check=False,
            )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(runner: list[str], bins: Path, data: Path, root: Path, log: Path) -> int:
    """Start on a free port; another process may take the port first, so try a few."""
    for attempt in range(3):
        port = free_port()
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        started = subprocess.run(
            [*runner, str(bins / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
             "-w", "-t", str(START_TIMEOUT_S), "start"],
            capture_output=True, text=True, timeout=START_TIMEOUT_S + 10, check=False,
        )  # fmt: skip
        if started.returncode == 0:
            return port
        if attempt == 2:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{tail}")
    raise AssertionError("unreachable")


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr or done.stdout}")


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server: the URL of `postgres_server` with its name."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def dump_text(url: str) -> str:
    """Every row of every table of the database's public schema, all columns as text."""
    with psycopg.connect(url) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        lines: list[str] = []
        for table in tables:
            lines.extend(
                f"{table}: {row[0]}"
                for row in connection.execute(f'SELECT t::text FROM "{table}" AS t')
            )
    return "\n".join(lines)
