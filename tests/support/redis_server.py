"""A real `redis-server` (Debian's) on 127.0.0.1 for the tests: started, PINGed, stopped by pid."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.support.processes import stop
from tests.support.sockets import free_port

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0


def redis_server_missing() -> str | None:
    """Why the tests cannot start a Redis here, or None when they can."""
    if Path(REDIS_SERVER).is_file():
        return None
    return f"Debian's redis-server is not installed at {REDIS_SERVER} (`make services`)"


@contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """A fresh, empty Redis on 127.0.0.1:`port` (a free one unless given) that keeps nothing
    on disk, until the block exits; yields its URL, `redis://127.0.0.1:PORT/0`. Given the
    port of one stopped earlier, it is that Redis restarted (empty, as after a crash)."""
    port = port or free_port()
    if (missing := redis_server_missing()) is not None:
        raise RuntimeError(missing)
    with tempfile.TemporaryDirectory(prefix="redis-") as workdir:
        log_path = Path(workdir) / "redis.log"
        command = [
            REDIS_SERVER,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", workdir,
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            _wait_for_ping(process, port, log_path)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(process)


def _wait_for_ping(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    client = redis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {process.returncode}: "
                    f"{log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError):  # not listening yet, or loading
                pass
            if time.monotonic() > deadline:
                stop(process)
                raise TimeoutError(
                    f"redis-server on port {port} did not answer PING within "
                    f"{START_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.02)
    finally:
        client.close()
