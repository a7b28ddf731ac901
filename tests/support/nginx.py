"""A real nginx (Debian's) on 127.0.0.1 in front of a test's server, configured by the example
we ship (`deploy/nginx.conf`): rendered into a temp dir, started, stopped by pid.

Only the lines the shipped file marks `test:` change (where nginx listens, the upstream's
address, the pid, log and temp paths), so every proxy directive a test exercises is the one a
user gets. Each substitution must match the shipped text exactly once: a rewrite of the file
that moves those lines fails here loudly instead of testing a different config.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop
from tests.support.sockets import free_port

NGINX = os.environ.get("RAG_TEST_NGINX", "/usr/sbin/nginx")
SHIPPED_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
START_TIMEOUT_S = 10.0
CHECK_TIMEOUT_S = 30.0
_START_ATTEMPTS = 3  # another process may take the free port before nginx binds it


def nginx_missing() -> str | None:
    """Why the tests cannot start an nginx here, or None when they can."""
    if os.access(NGINX, os.X_OK):
        return None
    return f"Debian's nginx is not installed at {NGINX} (`make services`)"


def render(source: str, *, port: int, upstream: str, workdir: Path) -> str:
    """The shipped config listening on 127.0.0.1:`port`, proxying to `upstream`
    (`host:port`), with its pid file, logs and temp dirs under `workdir`."""
    replacements = [
        ("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};", 1),
        ("server 127.0.0.1:8000;", f"server {upstream};", 1),
        ("pid /run/nginx.pid;", f"pid {workdir}/nginx.pid;", 1),
        ("error_log /var/log/nginx/error.log", f"error_log {workdir}/error.log", 1),
        ("access_log /var/log/nginx/access.log", f"access_log {workdir}/access.log", 1),
        # client_body, proxy, fastcgi, uwsgi and scgi temp paths
        (" /var/lib/nginx/", f" {workdir}/temp/", 5),
    ]
    for old, new, count in replacements:
        found = source.count(old)
        if found != count:
            raise AssertionError(
                f"{SHIPPED_CONF} has {found} of {old!r} where the test expects {count}: "
                "keep the lines marked 'test:' as they are, or update tests/support/nginx.py"
            )
        source = source.replace(old, new)
    return source


@dataclass(frozen=True)
class NginxProxy:
    """A running nginx: its URL and the files it writes."""

    url: str
    workdir: Path

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of nginx's error log, for a failing test's message."""
        try:
            text = self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(nginx wrote no error log)"
        return f"nginx error.log:\n{text[-chars:]}" if text else "(nginx's error log is empty)"


def _workdir() -> Path:
    """A temp dir under /tmp that nginx's workers can reach: started as root, nginx runs them
    as the config's `user` (www-data), which pytest's private tmp dirs would lock out."""
    workdir = Path(tempfile.mkdtemp(prefix="ragserve-nginx-", dir="/tmp"))
    workdir.chmod(0o755)
    (workdir / "temp").mkdir(mode=0o755)
    return workdir


def _command(conf: Path, workdir: Path, *extra: str) -> list[str]:
    return [NGINX, "-c", str(conf), "-p", f"{workdir}/", "-g", "daemon off;", *extra]


def check_config(upstream: str = "127.0.0.1:8000") -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the shipped config as `nginx_proxy` renders it (nothing is started)."""
    if (missing := nginx_missing()) is not None:
        raise RuntimeError(missing)
    workdir = _workdir()
    try:
        conf = workdir / "nginx.conf"
        conf.write_text(
            render(SHIPPED_CONF.read_text(), port=free_port(), upstream=upstream, workdir=workdir)
        )
        return subprocess.run(
            _command(conf, workdir, "-t"),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            check=False,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def nginx_proxy(upstream_url: str) -> Iterator[NginxProxy]:
    """Debian's nginx with the shipped config in front of `upstream_url`
    (`http://127.0.0.1:PORT`), on a free loopback port, until the block exits."""
    if (missing := nginx_missing()) is not None:
        raise RuntimeError(missing)
    upstream = upstream_url.removeprefix("http://").rstrip("/")
    workdir = _workdir()
    try:
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            conf = workdir / "nginx.conf"
            conf.write_text(
                render(SHIPPED_CONF.read_text(), port=port, upstream=upstream, workdir=workdir)
            )
            proxy = NginxProxy(url=f"http://127.0.0.1:{port}", workdir=workdir)
            stderr = workdir / "stderr.log"
            with stderr.open("wb") as out:
                # A session of its own: should the master need SIGKILL, its workers go too.
                process = subprocess.Popen(
                    _command(conf, workdir),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    start_new_session=True,
                )
            try:
                if _wait_until_accepting(process, port):
                    break
            except BaseException:
                stop(process)
                raise
            output = stderr.read_text(errors="replace")
            if attempt == _START_ATTEMPTS - 1 or "Address already in use" not in output:
                raise RuntimeError(
                    f"nginx exited with {process.returncode}: {output[-2000:]}\n{proxy.log_tail()}"
                )
        try:
            yield proxy
        finally:
            stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_accepting(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once nginx accepts on `port`; False if it exited (the caller reads why)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:  # not listening yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nginx did not accept on port {port} within {START_TIMEOUT_S} s")
        time.sleep(0.02)
    return False
