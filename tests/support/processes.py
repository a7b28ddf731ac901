"""Stopping the services a test started (nginx, Prometheus, Redis): by their own process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

STOP_TIMEOUT_S = 10.0


def stop(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (each service's clean shutdown), then SIGKILL if it lingers: to its process
    group when it leads one (started with `start_new_session`: nginx's workers go too), else
    to the process alone."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # not a group leader: no group of its id
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        process.wait(timeout=timeout_s)
