"""Generator adapter running vLLM in-process (AsyncLLM): the embedded default, CPU or GPU.

The engine's own statistics (KV-cache usage, requests running and waiting in its scheduler)
come from a stat logger that keeps only the latest values (`engine_stats()`), for the metrics
to read when scraped: nothing is computed per token beyond what vLLM does with stats on.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import platform
import signal
import threading
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipelines.errors import (
    ConfigError,
    GenerationFailed,
    GeneratorUnavailable,
    InvalidInput,
    NotFound,
    RagError,
)
from pipelines.generators.weights import resolve_model
from pipelines.settings import LLMSettings
from pipelines.types import GenerationChunk, GenerationRequest

log = logging.getLogger(__name__)

_KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
# How long close() lets an engine-core process that is already tearing itself down finish
# (its workers' exit, then the shared-memory queues it unlinks) before vLLM's shutdown.
_TEARDOWN_GRACE_S = 60.0


@dataclass(frozen=True, slots=True)
class EngineStats:
    """The engine scheduler's state after its latest step."""

    kv_cache_usage: float  # fraction of the KV-cache blocks in use, 0–1
    running: int
    waiting: int


class _LatestStats:
    """Where the engine's stat logger leaves its latest values (written and read on the
    event loop: the engine's output handler is a task of it)."""

    def __init__(self) -> None:
        self.latest: EngineStats | None = None


class VllmEngineGenerator:
    """Streams chat answers from an in-process vLLM engine; build it with `start()`."""

    def __init__(
        self,
        engine: Any,
        tokenizer: Any,
        *,
        name: str,
        max_model_len: int,
        stats: _LatestStats | None = None,
    ) -> None:
        # Use `start()`: it resolves the weights and builds the engine off the event loop.
        self._engine = engine
        self._tokenizer = tokenizer
        # Tokenizing runs in worker threads (the chain's budget, each prompt); a Hugging Face
        # fast tokenizer is not safe to share between threads at once ("Already borrowed").
        self._tokenizer_lock = threading.Lock()
        self._name = name
        self._max_model_len = max_model_len
        self._stats = stats
        self._closed = False

    @classmethod
    async def start(
        cls, settings: LLMSettings, cache_dir: Path, *, engine_stats: bool = True
    ) -> VllmEngineGenerator:
        """Resolve the model (converting the bundled GGUF once) and start the engine.
        `engine_stats=False`: vLLM keeps no statistics (the metrics benchmark's baseline)."""
        model_path = await asyncio.to_thread(resolve_model, settings.model, cache_dir)
        await asyncio.to_thread(_import_vllm)
        began = time.perf_counter()
        stats = _LatestStats() if engine_stats else None
        engine, tokenizer = await asyncio.to_thread(_build_engine, settings, model_path, stats)
        generator = cls(
            engine,
            tokenizer,
            name=settings.model,
            max_model_len=settings.max_model_len,
            stats=stats,
        )
        log.info(
            "vLLM engine ready with %s (%s) in %.1f s",
            model_path,
            generator.dtype,
            time.perf_counter() - began,
        )
        return generator

    @property
    def model_names(self) -> list[str]:
        return [self._name]

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def dtype(self) -> str:
        """The dtype the engine computes in, e.g. 'float32'."""
        return str(self._engine.model_config.dtype).removeprefix("torch.")

    @property
    def max_num_seqs(self) -> int:
        """How many requests the engine's scheduler batches at once: past it they queue
        inside the engine, where nobody can be told to come back later (admission control
        sizes its gate by it)."""
        return int(self._engine.scheduler_config.max_num_seqs)

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def ready(self) -> bool:
        if self._closed:
            return False
        try:
            await self._engine.check_health()
        except Exception:
            return False
        return True

    def engine_stats(self) -> EngineStats | None:
        """The scheduler's KV-cache usage and queues after its latest step; None before the
        first step, with statistics off, or once shut down."""
        if self._closed or self._stats is None:
            return None
        return self._stats.latest

    def active_requests(self) -> int:
        """Requests the engine still tracks (running or queued); 0 once every stream ended."""
        if self._closed:
            return 0
        return int(self._engine.get_num_unfinished_requests())

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        if self._closed:
            raise GeneratorUnavailable("the vLLM engine is shut down")
        if request.model is not None and request.model != self._name:
            raise NotFound(
                f"unknown model '{request.model}'; known models: {self._name} "
                "(the in-process engine serves one model)"
            )
        # Off the event loop: a long history takes the tokenizer milliseconds.
        prompt_ids = await asyncio.to_thread(self._prompt_ids, request)
        room = self._max_model_len - len(prompt_ids)
        if room < 1:
            raise InvalidInput(
                f"the prompt is {len(prompt_ids)} tokens; the model accepts at most "
                f"{self._max_model_len - 1} so that at least one token can be generated"
            )
        params = SamplingParams(
            max_tokens=min(request.max_tokens, room),
            temperature=request.temperature,
            output_kind=RequestOutputKind.DELTA,
            # stop, seed, top_p, penalties: only those the client set (vLLM's defaults else).
            **request.sampling.options(),
        )
        # vLLM aborts by request id: make it unique even when callers reuse theirs.
        request_id = f"{request.request_id or 'gen'}-{uuid.uuid4().hex[:12]}"
        outputs = self._engine.generate(_token_prompt(prompt_ids), params, request_id)
        completion_tokens = 0
        finished = False
        try:
            async for output in outputs:
                piece = output.outputs[0]
                completion_tokens += len(piece.token_ids)
                if piece.text:
                    yield GenerationChunk(text=piece.text)
                if output.finished:
                    finished = True
                    yield GenerationChunk(
                        text="",
                        finish_reason=_finish_reason(piece.finish_reason),
                        prompt_tokens=len(prompt_ids),
                        completion_tokens=completion_tokens,
                    )
        except (GeneratorExit, asyncio.CancelledError):
            # The consumer went away: free the engine's slot now, then let the exit proceed.
            if not finished:
                await self._engine.abort(request_id)
            raise
        except RagError:
            raise
        except Exception as exc:
            if self._engine.errored:
                raise GeneratorUnavailable(f"the vLLM engine died: {exc}") from exc
            raise GenerationFailed(f"vLLM generation failed: {exc}") from exc
        finally:
            await outputs.aclose()

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        if not request.messages:
            raise InvalidInput("a generation request needs at least one message")
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        with self._tokenizer_lock:
            ids = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        return [int(i) for i in ids]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _await_engine_teardown(_TEARDOWN_GRACE_S)
        # Synchronous on purpose: in a worker thread the engine's output task would wake on the
        # dying engine-core socket and log a spurious EngineDeadError before being cancelled.
        self._engine.shutdown()
        self._engine = None


def _await_engine_teardown(timeout_s: float) -> None:
    """Wait for an engine-core process that is already shutting down by itself to finish.

    A Ctrl-C in a terminal signals the whole foreground process group: vLLM's engine core gets
    the SIGINT too and starts its teardown, in which it no longer handles SIGTERM. vLLM's
    `shutdown()` then sends it SIGTERM, which would kill it before it unlinks its shared-memory
    queues ("There appear to be 1 leaked shared_memory objects" from the resource tracker at
    exit). A core still handling SIGTERM is running: `shutdown()` stops it cleanly, no wait.
    """
    deadline = time.monotonic() + timeout_s
    for proc in multiprocessing.active_children():
        if not proc.name.startswith("EngineCore") or proc.pid is None:
            continue
        while proc.is_alive() and not _handles_sigterm(proc.pid):
            if time.monotonic() > deadline:
                log.warning("vLLM engine core %d still tearing down: stopping it", proc.pid)
                return
            proc.join(0.05)


def _handles_sigterm(pid: int) -> bool:
    """Whether process `pid` has a SIGTERM handler (Linux `/proc`; elsewhere: assume so)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    caught = next((line for line in status.splitlines() if line.startswith("SigCgt:")), None)
    if caught is None:
        return True
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def _import_vllm() -> None:
    """Import vLLM (seconds) in a frame that holds nothing.

    vLLM 0.32's first import keeps its caller's frame alive for good; were that the frame that
    builds the engine, the engine could never be freed and its __del__ would fail at exit.
    """
    import vllm.engine.arg_utils
    import vllm.v1.engine.async_llm  # noqa: F401


def cpu_dtype(machine: str, native_bf16: bool) -> str:
    """The CPU compute dtype: bfloat16 where the CPU has bf16 arithmetic, float32 elsewhere.

    On an AVX2-only x86 CPU oneDNN has no bf16 matmul and vLLM falls back to slow torch
    kernels: SmolLM2-135M prefilled a 917-token prompt in 22 s in bf16, 4.8 s in float32, and
    decoded 17 vs 15 tokens/s (docs/benchmarks.md). vLLM's CPU build treats Arm bf16 as native.
    """
    if native_bf16 or machine.lower() in ("aarch64", "arm64"):
        return "bfloat16"
    return "float32"


def auto_cpu_dtype() -> str:
    """What `dtype="auto"` computes in on this machine's CPU."""
    return cpu_dtype(platform.machine(), cpu_has_native_bf16())


def cpu_has_native_bf16() -> bool:
    """Whether this x86 CPU computes bf16 natively (AVX512-BF16 or AMX), as torch detects it."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _stat_logger(box: _LatestStats) -> Any:
    """A vLLM stat logger class (a per-engine factory) that keeps the scheduler's latest
    figures in `box`. Its `record` runs once per engine step, in the output handler."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class LatestStatsLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is None:
                return
            box.latest = EngineStats(
                kv_cache_usage=float(scheduler_stats.kv_cache_usage),
                running=int(scheduler_stats.num_running_reqs),
                # Waiting as vLLM's own log line counts it: deferred requests wait too.
                waiting=int(scheduler_stats.num_waiting_reqs)
                + int(getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)),
            )

        def log_engine_initialized(self) -> None:
            return None

    return LatestStatsLogger


def _build_engine(
    settings: LLMSettings, model_path: str, stats: _LatestStats | None = None
) -> tuple[Any, Any]:
    """Blocking: vLLM loads weights and starts its engine-core process (about a minute on CPU).
    With `stats`, the engine keeps statistics for our logger only (vLLM's periodic log line
    stays off: `disable_log_stats`)."""
    from transformers import AutoTokenizer
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform
    from vllm.v1.engine.async_llm import AsyncLLM

    on_cpu = current_platform.is_cpu()
    if on_cpu:
        # vLLM reads this when it sizes the KV cache; an operator's own value wins.
        os.environ.setdefault(_KVCACHE_ENV, str(settings.cpu_kvcache_gib))
    args: dict[str, Any] = {
        "model": model_path,
        "served_model_name": settings.model,
        "enforce_eager": settings.enforce_eager,
        "max_model_len": settings.max_model_len,
        "disable_log_stats": True,
    }
    if settings.dtype != "auto":
        args["dtype"] = settings.dtype
    elif on_cpu:
        args["dtype"] = auto_cpu_dtype()
    if not on_cpu:
        args["gpu_memory_utilization"] = settings.gpu_memory_utilization
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if tokenizer.chat_template is None:
            raise ConfigError(f"model '{model_path}' has no chat template; use an instruct model")
        loggers = [_stat_logger(stats)] if stats is not None else None
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args), stat_loggers=loggers)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"vLLM could not load model '{model_path}': {exc}") from exc
    return engine, tokenizer


def _token_prompt(prompt_ids: list[int]) -> Any:
    """The engine input for pre-tokenized text, in the form this vLLM version prefers."""
    try:
        from vllm.inputs.engine import tokens_input
    except ImportError:  # vLLM before the renderer split takes a TokensPrompt dict
        return {"prompt_token_ids": prompt_ids}
    return tokens_input(prompt_ids)


def _finish_reason(reason: str | None) -> Literal["stop", "length"]:
    if reason == "length":
        return "length"
    if reason in ("abort", "error"):
        raise GenerationFailed(f"vLLM ended the generation with '{reason}'")
    return "stop"  # stop, EOS, a stop string, or vLLM's repetition guard
