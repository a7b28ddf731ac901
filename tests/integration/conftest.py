"""Real engines for integration tests: the bundled model, vLLM in-process, a vLLM server process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from pipelines.generators.vllm_engine import VllmEngineGenerator
from pipelines.generators.weights import resolve_model
from pipelines.settings import BUNDLED_MODEL, LLMSettings
from tests.support.sockets import free_port

# The GGUF -> HF conversion takes about a minute: keep its result between test sessions.
MODEL_CACHE = Path(os.environ.get("RAG_TEST_MODEL_CACHE", "/tmp/ragserve-test-models"))
SERVER_START_TIMEOUT_S = 300.0


@pytest.fixture
def closed_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def model_path() -> str:
    return resolve_model(BUNDLED_MODEL, MODEL_CACHE)


# Session scope: each starts once (about a minute on a CPU). The engine and the server each
# pin their compute to a core; they are idle between tests, and no test drives both at once.
@pytest_asyncio.fixture(scope="session")
async def vllm_engine(model_path: str) -> AsyncIterator[VllmEngineGenerator]:
    generator = await VllmEngineGenerator.start(LLMSettings(), MODEL_CACHE)
    try:
        yield generator
    finally:
        await generator.close()


@pytest.fixture(scope="session")
def served_model() -> str:
    """The name the vLLM server fixture serves the bundled model under."""
    return "smollm2"


@pytest.fixture(scope="session")
def vllm_server(
    model_path: str, served_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` on loopback; yields its base URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path,
        "--served-model-name", served_model,
        "--enforce-eager",
        "--max-model-len", "2048",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        # Own process group: teardown stops the server and the engine processes it spawned.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, base_url, log_path)
        yield base_url
    finally:
        _stop(process)


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vLLM server exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    pytest.fail(f"vLLM server not healthy after {SERVER_START_TIMEOUT_S:.0f} s:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (vLLM shuts its engine down), then SIGKILL leftovers."""
    group = process.pid  # start_new_session: the server leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait(timeout=10)


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
