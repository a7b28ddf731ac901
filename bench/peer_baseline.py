"""The plain recipe, the load benchmark's peer: FastAPI + `StreamingResponse` + the blocking
(sync) `openai` SDK streaming from a vLLM OpenAI server. Not part of the product.

Two routes, the two ways the recipe is written in the wild, so `bench/load.py` can show what
each costs under concurrent streams:

* `POST /ask/stream` — a sync generator handed to `StreamingResponse`: Starlette iterates it
  in its thread pool (anyio's default limiter, 40 threads), so every open stream holds a
  thread while it blocks on the next chunk;
* `POST /ask/stream-inline` — an `async def` generator that iterates the sync stream: every
  blocking read runs on the event loop, which serves nothing else meanwhile.

Both take the prompt's messages ready-made (the benchmark sends the exact messages our chain
builds), so what differs from ours is the relay, not retrieval. `GET /healthz` is the probe.

    .venv/bin/python bench/peer_baseline.py --port 8100 --base-url http://127.0.0.1:8000 \
        --model bench-model
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Iterator
from typing import cast

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field


class PeerAsk(BaseModel):
    """The prompt as our chain renders it, and the generation options."""

    messages: list[dict[str, str]] = Field(min_length=1)
    max_tokens: int = Field(default=64, ge=1)
    temperature: float = 0.0


def create_app(base_url: str, model: str) -> FastAPI:
    # One client for the process, as the recipe has it: the SDK's own connection pool.
    client = OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="EMPTY", max_retries=0)
    app = FastAPI(title="plain recipe (bench peer)")

    def chunks(ask: PeerAsk) -> Iterator[str]:
        stream = client.chat.completions.create(
            model=model,
            messages=cast(list[ChatCompletionMessageParam], ask.messages),
            max_tokens=ask.max_tokens,
            temperature=ask.temperature,
            stream=True,
        )
        with stream:
            for chunk in stream:
                text = chunk.choices[0].delta.content if chunk.choices else None
                if text:
                    yield f"data: {json.dumps({'text': text})}\n\n"
        yield "data: [DONE]\n\n"

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/ask/stream")
    async def ask_stream(ask: PeerAsk) -> StreamingResponse:
        return StreamingResponse(chunks(ask), media_type="text/event-stream")

    @app.post("/ask/stream-inline")
    async def ask_stream_inline(ask: PeerAsk) -> StreamingResponse:
        async def inline() -> AsyncIterator[str]:
            for frame in chunks(ask):  # each blocking read on the event loop
                yield frame

        return StreamingResponse(inline(), media_type="text/event-stream")

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--base-url", required=True, help="the vLLM OpenAI server")
    ap.add_argument("--model", required=True, help="its served model name")
    args = ap.parse_args()
    uvicorn.run(
        create_app(args.base_url, args.model), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
