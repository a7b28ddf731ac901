"""A real vLLM OpenAI-compatible server process on loopback for tests: start it, wait until it
is healthy, stop it, SIGKILL its whole process group (a crash), start it again on the same
port (the server coming back)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.sockets import free_port

# About 70 s with --enforce-eager on 2 CPU cores; a busy machine takes longer.
START_TIMEOUT_S = 300.0


class VllmServerError(RuntimeError):
    """The server exited or did not become healthy; the message carries its log's tail."""


class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` serving `model_path` as `served_model`.

    The server leads its own process group (it spawns the engine core process), so `stop` and
    `kill` reach every process it started, and a restart finds the port free."""

    def __init__(
        self, model_path: str, served_model: str, log_dir: Path, *, port: int | None = None
    ) -> None:
        self.model_path = model_path
        self.served_model = served_model
        self.log_dir = log_dir
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        """The log of the latest start (each start writes its own)."""
        return self.log_dir / f"server-{self.starts}.log"

    def start(self) -> None:
        """Start the process (not waiting for it to be healthy: see `wait_healthy`)."""
        if self.process is not None and self.process.poll() is None:
            raise VllmServerError("the vLLM server is already running")
        self.starts += 1
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_path,
            "--served-model-name", self.served_model,
            "--enforce-eager",
            "--max-model-len", "2048",
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def healthy(self) -> bool:
        """Running and answering `GET /health` now."""
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll `GET /health` until 200; raise if the process exits or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise VllmServerError(f"vLLM server exited with {code}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise VllmServerError(f"vLLM server not healthy after {timeout_s:.0f} s:\n{self.tail()}")

    def start_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self.start()
        try:
            self.wait_healthy(timeout_s)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash: no shutdown, connections reset),
        and reap the server."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the process group (vLLM shuts its engine down), then SIGKILL leftovers."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        self.kill()

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start again on the same port and wait until healthy."""
        self.start_healthy(timeout_s)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        # start_new_session: the server leads its own group, whose id is its pid. The group
        # outlives its leader while the engine process lives, so signal it even if reaped.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
