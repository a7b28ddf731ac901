"""The service's own share of time to first token: /v1/ask/stream over a zero-latency generator.

Isolates what `bench/stream.py` cannot on a machine where vLLM shares the cores: the real app
on 127.0.0.1 (uvicorn), the real embedder and Qdrant Edge over samples/, and the
ScriptedGenerator of tests/support/fakes.py (answers at once), so TTFT − retrieval is the service's
own work (routing, prompt packing, SSE) plus loopback HTTP. Prints JSON; --out writes it too.

    .venv/bin/python bench/service_overhead.py --out bench/results/service-overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import emit_report  # noqa: E402


async def run(requests: int, warmup: int) -> dict[str, Any]:
    from app.main import create_app
    from app.services import build_services
    from ingest.job import open_pipeline
    from pipelines.settings import Settings
    from tests.support.fakes import ScriptedGenerator
    from tests.support.servers import live_server

    settings = Settings(_env_file=None, data_dir=Path(tempfile.mkdtemp(prefix="ragbench-")))  # type: ignore[call-arg]
    async with open_pipeline(settings) as pipeline:
        await pipeline.run([REPO / "samples"], "default")
    rows: list[tuple[float, float, float]] = []
    async with AsyncExitStack() as stack:
        services = await build_services(settings, stack, start_generator=False)
        services.set_generator(ScriptedGenerator())
        async with (
            live_server(create_app(settings, services=services)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            body = {"question": "How hot is the surface of Venus?", "max_tokens": 16}
            for i in range(warmup + requests):
                started, first, done, event = time.perf_counter(), 0.0, {}, ""
                async with client.stream("POST", "/v1/ask/stream", json=body) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "token" and not first:
                            first = (time.perf_counter() - started) * 1000
                        elif line.startswith("data:") and event == "done":
                            done = json.loads(line[5:])["latency_ms"]
                if i >= warmup:
                    rows.append((first, float(done["retrieval"]), float(done["ttft"])))
    client_ttft = statistics.median(r[0] for r in rows)
    retrieval = statistics.median(r[1] for r in rows)
    server_ttft = statistics.median(r[2] for r in rows)
    return {
        "benchmark": "service_overhead",
        "requests": requests,
        "client_ttft_p50_ms": round(client_ttft, 2),
        "server_retrieval_p50_ms": round(retrieval, 2),
        "server_ttft_p50_ms": round(server_ttft, 2),
        "added_ttft_beyond_retrieval_ms": round(client_ttft - retrieval, 2),
        "target_added_ttft_ms_max": 5,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report = asyncio.run(run(args.requests, args.warmup))
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
