"""The service's embedder leaves the in-process engine's cores to the engine on a CPU."""

from __future__ import annotations

import pytest

from app import services
from app.services import beside_local_engine
from pipelines.embedder.sessions import cpu_threads
from pipelines.settings import Settings


@pytest.fixture(autouse=True)
def on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "nvidia_present", lambda: False)
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)


def test_in_process_engine_on_a_cpu_leaves_the_embedder_the_reserved_core() -> None:
    assert beside_local_engine(Settings()).embedding.threads == 1


def test_more_cores_reserved_for_the_server_are_the_embedders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "4")
    assert beside_local_engine(Settings()).embedding.threads == min(4, cpu_threads())


@pytest.mark.parametrize(
    "settings",
    [
        Settings(embedding={"threads": 2}),  # the operator's choice
        Settings(llm={"base_url": "http://127.0.0.1:9"}),  # the engine runs elsewhere
    ],
)
def test_an_explicit_choice_or_a_remote_engine_is_left_alone(settings: Settings) -> None:
    assert beside_local_engine(settings) == settings


def test_on_a_gpu_the_embedder_keeps_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "nvidia_present", lambda: True)
    assert beside_local_engine(Settings()).embedding.threads is None
