"""What API keys cost a request: /v1/search (and /v1/me, no retrieval) open, with the bootstrap
key, and with a database key (SQLite lookup + last-used touch in a worker thread) with and
without a per-minute limit, measured side by side in one run, interleaved.

The real app in-process (ASGI: on this machine a uvicorn server and an httpx client sharing
one event loop wait ~44 ms per request on loopback, for a bare FastAPI route too, which would
drown the figures), the real embedder and Qdrant Edge over samples/. Each
round sends `--requests` to every variant in turn, so drift hits them alike. Prints JSON;
--out writes it too.

    .venv/bin/python bench/auth.py --out bench/results/auth.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import cpu_info, emit_report  # noqa: E402

BOOTSTRAP = "bench-bootstrap-key"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(requests: int, rounds: int) -> dict[str, Any]:
    from app.main import create_app
    from app.services import build_services
    from ingest.job import open_pipeline
    from pipelines.settings import Settings
    from tests.support.servers import in_process_client

    data = Path(tempfile.mkdtemp(prefix="ragbench-auth-"))
    times: dict[str, dict[str, list[float]]] = {}
    async with AsyncExitStack() as stack:
        clients: dict[str, httpx.AsyncClient] = {}
        headers: dict[str, dict[str, str]] = {}
        for variant in ("open", "bootstrap", "db_key", "db_key_rpm"):
            # One service per variant (own data dir): "open" must have no key database rows.
            settings = Settings(_env_file=None, data_dir=data / variant)  # type: ignore[call-arg]
            async with open_pipeline(settings) as pipeline:
                await pipeline.run([REPO / "samples"], "default")
            if variant == "bootstrap":
                settings.server.api_key = SecretStr(BOOTSTRAP)
            services = await build_services(settings, stack, start_generator=False)
            headers[variant] = {}
            if variant == "bootstrap":
                headers[variant] = {"Authorization": f"Bearer {BOOTSTRAP}"}
            elif services.keys is not None and variant.startswith("db_key"):
                rpm = 10**9 if variant == "db_key_rpm" else None
                _, token = services.keys.create(
                    name=variant, role="read", collections=["default"], requests_per_minute=rpm
                )
                headers[variant] = {"Authorization": f"Bearer {token}"}
            clients[variant] = await stack.enter_async_context(
                in_process_client(create_app(settings, services=services))
            )
            clients[variant].headers.update(headers[variant])
            times[variant] = {"search": [], "me": []}
        body = {"query": "How hot is the surface of Venus?", "k": 3}
        for client in clients.values():  # warm-up
            for _ in range(20):
                assert (await client.post("/v1/search", json=body)).status_code == 200
        for _ in range(rounds):
            for variant, client in clients.items():
                for _ in range(requests):
                    started = time.perf_counter()
                    r = await client.post("/v1/search", json=body)
                    times[variant]["search"].append((time.perf_counter() - started) * 1000)
                    assert r.status_code == 200, r.text
                    started = time.perf_counter()
                    r = await client.get("/v1/me")
                    times[variant]["me"].append((time.perf_counter() - started) * 1000)
                    assert r.status_code == 200, r.text
    report: dict[str, Any] = {
        "benchmark": "auth_overhead",
        "cpu": cpu_info(),
        "requests_per_variant_and_route": requests * rounds,
        "variants": {},
    }
    for variant, routes in times.items():
        report["variants"][variant] = {
            f"{route}_{name}_ms": round(fn(values), 3)
            for route, values in routes.items()
            for name, fn in (
                ("p50", statistics.median),
                ("p99", lambda v: quantile(v, 0.99)),
            )
        }
    base = report["variants"]["open"]
    report["added_p50_ms_vs_open"] = {
        v: {
            "search": round(r["search_p50_ms"] - base["search_p50_ms"], 3),
            "me": round(r["me_p50_ms"] - base["me_p50_ms"], 3),
        }
        for v, r in report["variants"].items()
        if v != "open"
    }
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50, help="per variant and round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    emit_report(asyncio.run(run(args.requests, args.rounds)), args.out)


if __name__ == "__main__":
    main()
