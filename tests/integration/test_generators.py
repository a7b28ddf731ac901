"""Both Generator adapters against a real vLLM: the in-process engine and an OpenAI server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from pipelines.errors import GeneratorUnavailable, NotFound, UpstreamTimeout
from pipelines.generators import build_generator
from pipelines.generators.openai_server import OpenAIServerGenerator
from pipelines.generators.vllm_engine import VllmEngineGenerator, auto_cpu_dtype
from pipelines.settings import LLMModel, LLMSettings, Settings
from pipelines.types import ChatMessage, GenerationChunk, GenerationRequest
from tests.support.sockets import loopback_socket, url_of

SHORT = [ChatMessage("user", "What is the capital of France? Answer in one word.")]
LONG = [ChatMessage("user", "Write a very long story about a dragon who learns to cook.")]
WAIT_S = 30.0


def ask(
    messages: list[ChatMessage], max_tokens: int, model: str | None = None
) -> GenerationRequest:
    return GenerationRequest(
        messages=messages, max_tokens=max_tokens, temperature=0.0, model=model, request_id="t"
    )


async def collect(stream: AsyncIterator[GenerationChunk]) -> list[GenerationChunk]:
    return [chunk async for chunk in stream]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll until `check` holds, failing after WAIT_S: a bound, not a timing assertion."""
    deadline = time.monotonic() + WAIT_S
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT_S:.0f} s: {what}")
        await asyncio.sleep(0.1)


def final_of(chunks: list[GenerationChunk], max_tokens: int) -> GenerationChunk:
    """Check the stream's shape (text deltas, then one final chunk with usage); return the last."""
    *deltas, final = chunks
    assert deltas, "no text was streamed"
    assert all(c.text and c.finish_reason is None for c in deltas)
    assert final.text == ""
    assert final.finish_reason in ("stop", "length")
    assert final.prompt_tokens is not None
    assert final.prompt_tokens > 0
    assert final.completion_tokens is not None
    assert 0 < final.completion_tokens <= max_tokens
    return final


@pytest.mark.slow
@pytest.mark.vllm
class TestVllmEngineGenerator:
    def test_computes_in_the_cpu_dtype_this_machine_supports(
        self, vllm_engine: VllmEngineGenerator
    ) -> None:
        # bf16 on a CPU without bf16 arithmetic prefills ~4x slower than float32.
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            pytest.skip("the CPU dtype rule applies to vLLM's CPU build")
        assert vllm_engine.dtype == auto_cpu_dtype()

    async def test_short_prompt_streams_text_then_final_chunk_with_usage(
        self, vllm_engine: VllmEngineGenerator
    ) -> None:
        chunks = await collect(vllm_engine.stream(ask(SHORT, 16)))

        final_of(chunks, 16)
        assert "".join(c.text for c in chunks).strip()

    async def test_max_tokens_reached_finishes_with_length(
        self, vllm_engine: VllmEngineGenerator
    ) -> None:
        final = final_of(await collect(vllm_engine.stream(ask(LONG, 4))), 4)

        assert final.finish_reason == "length"
        assert final.completion_tokens == 4

    async def test_closing_stream_early_aborts_engine_request(
        self, vllm_engine: VllmEngineGenerator
    ) -> None:
        stream = vllm_engine.stream(ask(LONG, 1000))
        first = await anext(stream)
        assert first.text
        assert vllm_engine.active_requests() == 1

        await stream.aclose()

        async def drained() -> bool:
            return vllm_engine.active_requests() == 0

        await eventually(drained, "the engine still tracks the abandoned request")

    async def test_cancelled_consumer_aborts_request_and_cancellation_propagates(
        self, vllm_engine: VllmEngineGenerator
    ) -> None:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in vllm_engine.stream(ask(LONG, 1000)):
                started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), WAIT_S)
        task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await task

        async def drained() -> bool:
            return vllm_engine.active_requests() == 0

        await eventually(drained, "the engine still tracks the cancelled request")

    async def test_unknown_model_raises_not_found(self, vllm_engine: VllmEngineGenerator) -> None:
        with pytest.raises(NotFound, match="known models"):
            await anext(vllm_engine.stream(ask(SHORT, 4, model="no-such-model")))

    async def test_engine_reports_ready_and_counts_with_model_tokenizer(
        self, vllm_engine: VllmEngineGenerator
    ) -> None:
        assert await vllm_engine.ready()
        assert vllm_engine.count_tokens("hello world") == 2
        assert vllm_engine.max_model_len == 2048


async def server_metric(base_url: str, sample: str, **labels: str) -> float:
    """Sum of one Prometheus sample on vLLM's /metrics, over series matching `labels`."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{base_url}/metrics")).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def running(base_url: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await server_metric(base_url, "vllm:num_requests_running") == n

    return check


async def completed_requests(base_url: str) -> float:
    """Requests that ended on their own (an aborted one is not among them)."""
    reasons = ("stop", "length", "repetition")
    counts = [
        await server_metric(base_url, "vllm:request_success_total", finished_reason=r)
        for r in reasons
    ]
    return sum(counts)


# The server's context (2048) less room for the prompt: with `ignore_eos`, this many tokens
# take seconds to decode even on a GPU, and the test needs a few requests' worth of time.
UNENDING_MAX_TOKENS = 1900


class IgnoreEosTransport(httpx.AsyncHTTPTransport):
    """The real transport, adding vLLM's `ignore_eos` sampling option to each chat request:
    a generation then ends only at max_tokens or when it is aborted."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            body = {**json.loads(request.content), "ignore_eos": True}
            headers = [(k, v) for k, v in request.headers.items() if k != "content-length"]
            extensions = request.extensions
            request = httpx.Request(request.method, request.url, headers=headers, json=body)
            request.extensions = extensions
        return await super().handle_async_request(request)


@pytest.mark.slow
@pytest.mark.vllm
class TestOpenAIServerGenerator:
    @pytest_asyncio.fixture
    async def generator(
        self, vllm_server: str, served_model: str
    ) -> AsyncIterator[OpenAIServerGenerator]:
        settings = LLMSettings(
            base_url=vllm_server,
            model=served_model,
            # The same server again under an alias, its URL written the way clients often do.
            models={"small": LLMModel(base_url=f"{vllm_server}/v1", model=served_model)},
        )
        generator = OpenAIServerGenerator(settings)
        try:
            yield generator
        finally:
            await generator.close()

    async def test_stream_yields_answer_and_usage(self, generator: OpenAIServerGenerator) -> None:
        chunks = await collect(generator.stream(ask(SHORT, 16)))

        final_of(chunks, 16)
        assert "".join(c.text for c in chunks).strip()

    async def test_max_tokens_reached_finishes_with_length(
        self, generator: OpenAIServerGenerator
    ) -> None:
        final = final_of(await collect(generator.stream(ask(LONG, 4))), 4)

        assert final.finish_reason == "length"
        assert final.completion_tokens == 4

    @pytest.mark.parametrize("model", ["small", "smollm2"])
    async def test_model_by_alias_or_served_name_is_routed(
        self, generator: OpenAIServerGenerator, model: str
    ) -> None:
        final_of(await collect(generator.stream(ask(SHORT, 4, model=model))), 4)

    async def test_unknown_model_raises_not_found_listing_known_names(
        self, generator: OpenAIServerGenerator
    ) -> None:
        with pytest.raises(NotFound, match="known models: small, smollm2"):
            await anext(generator.stream(ask(SHORT, 4, model="large")))

    async def test_server_reports_ready_and_lists_its_models(
        self, generator: OpenAIServerGenerator, served_model: str
    ) -> None:
        assert await generator.ready()
        assert await generator.list_models() == [served_model]

    @pytest_asyncio.fixture
    async def unending(
        self, vllm_server: str, served_model: str
    ) -> AsyncIterator[OpenAIServerGenerator]:
        """A generator whose requests end only at max_tokens or by an abort, never on EOS."""
        settings = LLMSettings(base_url=vllm_server, model=served_model)
        generator = OpenAIServerGenerator(settings, transport=IgnoreEosTransport())
        try:
            yield generator
        finally:
            await generator.close()

    async def test_closing_stream_early_aborts_upstream_request(
        self, unending: OpenAIServerGenerator, vllm_server: str
    ) -> None:
        # The request cannot end on its own while the test watches it (where the model chose
        # to stop was a race against the metrics poll).
        completed_before = await completed_requests(vllm_server)
        stream = unending.stream(ask(LONG, UNENDING_MAX_TOKENS))
        assert (await anext(stream)).text
        await eventually(running(vllm_server, 1), "the server never showed the request running")

        await stream.aclose()

        await eventually(running(vllm_server, 0), "the server kept running the abandoned request")
        assert await completed_requests(vllm_server) == completed_before

    async def test_slow_upstream_raises_upstream_timeout(self, served_model: str) -> None:
        # An upstream on loopback that accepts the request and never answers: a real socket,
        # deterministic (a real vLLM decodes this model at ~10 ms a token here, so a short
        # timeout against it was a race).
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            await asyncio.sleep(30)
            writer.close()

        sock = loopback_socket()
        server = await asyncio.start_server(silent, sock=sock)
        settings = LLMSettings(base_url=url_of(sock), model=served_model, timeout_s=0.2)
        generator = OpenAIServerGenerator(settings)
        try:
            with pytest.raises(UpstreamTimeout):
                await collect(generator.stream(ask(LONG, 64)))
        finally:
            await generator.close()
            server.close()


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real transport, counting the requests it is asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return await super().handle_async_request(request)


async def test_server_down_raises_generator_unavailable_after_retries(closed_port: int) -> None:
    transport = CountingTransport()
    settings = LLMSettings(base_url=f"http://127.0.0.1:{closed_port}", model="m", retries=2)
    generator = OpenAIServerGenerator(settings, transport=transport)
    try:
        assert not await generator.ready()
        sent_by_ready = transport.sent

        with pytest.raises(GeneratorUnavailable, match="after 3 attempts") as raised:
            await anext(generator.stream(ask(SHORT, 4)))

        assert raised.value.retryable
        assert transport.sent - sent_by_ready == 3
    finally:
        await generator.close()


async def test_build_generator_with_base_url_builds_openai_server_generator() -> None:
    llm = LLMSettings(base_url="http://127.0.0.1:9/v1", model="m")
    settings = Settings(_env_file=None, llm=llm)

    generator = await build_generator(settings)

    try:
        assert isinstance(generator, OpenAIServerGenerator)
        assert generator.model_names == ["m"]
    finally:
        await generator.close()
