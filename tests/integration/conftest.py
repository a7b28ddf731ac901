"""Real engines for integration tests: the bundled model, vLLM in-process, a vLLM server process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from pipelines.generators.vllm_engine import VllmEngineGenerator
from pipelines.generators.weights import resolve_model
from pipelines.settings import BUNDLED_MODEL, LLMSettings
from tests.support.sockets import free_port
from tests.support.vllm_server import VllmServer, VllmServerError

# The GGUF -> HF conversion takes about a minute: keep its result between test sessions.
MODEL_CACHE = Path(os.environ.get("RAG_TEST_MODEL_CACHE", "/tmp/ragserve-test-models"))


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
def vllm_process(
    model_path: str, served_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """`python -m vllm.entrypoints.openai.api_server` on loopback, started once per session:
    the fault tests kill and restart it (on the same port) rather than start a second one."""
    server = VllmServer(model_path, served_model, tmp_path_factory.mktemp("vllm-server"))
    try:
        server.start_healthy()
    except VllmServerError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_server(vllm_process: VllmServer) -> str:
    """The session's vLLM server's base URL."""
    return vllm_process.base_url
