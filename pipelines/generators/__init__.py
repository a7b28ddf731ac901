"""Generator adapters behind the `Generator` port, and the factory that picks one from settings."""

from __future__ import annotations

from pipelines.ports import Generator
from pipelines.settings import Settings


async def build_generator(settings: Settings) -> Generator:
    """An OpenAI-compatible server when `llm.base_url` is set, else vLLM in-process."""
    if settings.llm.base_url is not None:
        from pipelines.generators.openai_server import OpenAIServerGenerator

        return OpenAIServerGenerator(settings.llm)
    from pipelines.generators.vllm_engine import VllmEngineGenerator

    return await VllmEngineGenerator.start(settings.llm, settings.model_dir)
