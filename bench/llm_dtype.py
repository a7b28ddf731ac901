"""In-process vLLM on CPU: time to first token and decode speed per compute dtype.

Starts the product's own in-process engine (`VllmEngineGenerator`, the bundled SmolLM2-135M)
once per dtype, one after the other in the same run, and sends the same prompts to each:
RAG-shaped prompts of about 250 and 850 tokens (sample-document text and a question; each
request starts with its own number, so vLLM's prefix cache cannot reuse an earlier
prefill) and a story prompt for decode speed. Reports the medians as JSON. `auto` is what
the product picks on this CPU (`RAG_LLM__DTYPE`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import cpu_info, emit_report  # noqa: E402
from pipelines.generators.vllm_engine import (  # noqa: E402
    VllmEngineGenerator,
    auto_cpu_dtype,
    cpu_has_native_bf16,
)
from pipelines.settings import LLMSettings, Settings  # noqa: E402
from pipelines.types import ChatMessage, GenerationRequest  # noqa: E402


def rag_prompt(n: int, context_tokens: int, gen: VllmEngineGenerator) -> list[ChatMessage]:
    text = " ".join(p.read_text() for p in sorted((REPO / "samples").glob("*.md")))
    words = text.split()
    words = words * (1 + 4 * context_tokens // len(words))  # the samples are short: repeat
    context = ""
    for size in range(50, len(words), 25):  # grow until the context has the tokens asked for
        context = " ".join(words[:size])
        if gen.count_tokens(context) >= context_tokens:
            break
    return [
        ChatMessage("system", f"Request {n}. Answer from the context.\n\n{context}"),
        ChatMessage("user", "What is ragserve and how do I run it?"),
    ]


async def timed(
    gen: VllmEngineGenerator, messages: list[ChatMessage], max_tokens: int
) -> dict[str, float]:
    began = time.perf_counter()
    first = None
    tokens = prompt = 0
    async for chunk in gen.stream(GenerationRequest(messages, max_tokens, 0.0)):
        if first is None and chunk.text:
            first = time.perf_counter()
        if chunk.completion_tokens is not None:
            tokens, prompt = chunk.completion_tokens, chunk.prompt_tokens or 0
    end = time.perf_counter()
    assert first is not None, "the engine streamed no text"
    decode_s = end - first
    return {
        "prompt_tokens": prompt,
        "ttft_ms": (first - began) * 1000,
        "tokens": tokens,
        "decode_tok_s": (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0,
    }


async def measure(dtype: str, reps: int, cache: Path) -> dict[str, Any]:
    began = time.perf_counter()
    gen = await VllmEngineGenerator.start(LLMSettings(dtype=dtype), cache)  # type: ignore[arg-type]
    start_s = time.perf_counter() - began
    try:
        await timed(gen, rag_prompt(0, 100, gen), 4)  # warm-up
        out: dict[str, Any] = {"dtype": gen.dtype, "engine_start_s": round(start_s, 1)}
        n = 1
        for size in (250, 850):
            runs = []
            for _ in range(reps):
                runs.append(await timed(gen, rag_prompt(n, size, gen), 1))
                n += 1
            out[f"ttft_ms_{size}"] = round(statistics.median(r["ttft_ms"] for r in runs), 1)
            out[f"prompt_tokens_{size}"] = runs[0]["prompt_tokens"]
        story = [ChatMessage("user", "Write a very long story about a dragon who learns to cook.")]
        decodes = [await timed(gen, story, 128) for _ in range(reps)]
        out["decode_tok_s"] = round(statistics.median(r["decode_tok_s"] for r in decodes), 1)
        out["decode_tokens"] = [int(r["tokens"]) for r in decodes]
        # A typical RAG answer here: an ~850-token prompt (5 chunks) and 128 tokens out.
        out["answer_s_850_128"] = round(out["ttft_ms_850"] / 1000 + 127 / out["decode_tok_s"], 1)
        return out
    finally:
        await gen.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model-cache", type=Path, default=Settings().model_dir)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [asyncio.run(measure(d, args.reps, args.model_cache)) for d in args.dtypes.split(",")]
    report = {
        "machine": platform.machine(),
        "cpu": cpu_info(),
        "native_bf16": cpu_has_native_bf16(),
        "auto_picks": auto_cpu_dtype(),
        "reps": args.reps,
        "rows": rows,
    }
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
