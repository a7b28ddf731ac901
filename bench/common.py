"""What the benchmark scripts share."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

# Questions the samples/ documents answer: the streaming and load benches ask them.
SAMPLE_QUESTIONS = [
    "How hot is the surface of Venus?",
    "Which planet has the tallest volcano?",
    "How much coffee per litre of water?",
    "What grind size suits a French press?",
    "How do I point ragserve at a Qdrant server?",
    "What does make run do?",
    "What are Saturn's rings made of?",
    "How long does espresso take to brew?",
]


def emit_report(report: dict[str, Any], out: Path | None) -> None:
    """Print the report as JSON and, with `out`, write the same JSON there."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def cpu_info() -> dict[str, Any]:
    """The CPU a figure was measured on: model name and the vector extensions that move our
    numbers (the embedder and vLLM compute in bf16 only with AVX512-BF16 / AMX)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return {"model": model, "extensions": [f for f in wanted if f in flags]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until `url` answers 200; fails at once if `proc` exits, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)
