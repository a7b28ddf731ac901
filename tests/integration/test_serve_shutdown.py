"""`rag serve` with vLLM in-process, stopped by Ctrl-C once ready: it exits cleanly, and the
multiprocessing resource tracker finds nothing left behind (no "leaked shared_memory")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import stop
from tests.support.sockets import free_port

pytestmark = pytest.mark.slow

READY_WITHIN_S = 480.0  # the engine starts in about a minute on a free CPU
EXIT_WITHIN_S = 120.0


def _generator_state(url: str) -> str | None:
    try:
        body = httpx.get(f"{url}/readyz", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None  # not listening yet
    state = body.get("details", {}).get("generator")
    return state if isinstance(state, str) else None


def test_ctrl_c_on_rag_serve_with_the_in_process_engine_leaks_no_shared_memory(
    tmp_path: Path, model_path: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {
        "RAG_DATA_DIR": str(tmp_path / "data"),
        # The session's one ONNX export of the embedder (tests/conftest.py).
        "RAG_EMBEDDING__CACHE_DIR": os.environ["RAG_EMBEDDING__CACHE_DIR"],
        "RAG_LLM__MODEL": model_path,  # the bundled model, converted once per test machine
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        # Its own process group, signalled as a terminal's Ctrl-C signals the foreground group:
        # vLLM's engine-core and worker processes get the SIGINT too.
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_WITHIN_S
        while (state := _generator_state(url)) != "ready":
            assert proc.poll() is None, log.read_text()
            assert state != "failed", log.read_text()
            assert time.monotonic() < deadline, f"not ready in {READY_WITHIN_S}s\n{log.read_text()}"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=EXIT_WITHIN_S)
    finally:
        stop(proc)
    output = log.read_text()
    assert code in (0, 130), output  # 130: the shell's status for a command ended by Ctrl-C
    assert "leaked shared_memory" not in output, output
    assert "Traceback" not in output, output
