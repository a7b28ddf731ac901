"""Ingest metrics: documents by outcome, chunks, embedding tokens and time, counted by the real
ingest job over the real model and store: in a registry, in `rag ingest --metrics-file` and
`--pushgateway`, and in the service's /metrics after an upload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.main import create_app
from app.metrics import PrometheusTelemetry
from app.services import Services
from ingest.job import build_pipeline
from pipelines.core import open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from tests.support.documents import CORRUPT_PDF
from tests.support.metrics import Samples, get, parse
from tests.support.servers import in_process_client
from tests.support.snapshots import edge_snapshot

pytestmark = pytest.mark.slow

OUTCOMES = ("added", "updated", "unchanged", "deleted", "failed")
LATE = b"# Late\n\nA note written after the others."


def _documents(samples: Samples, collection: str = "default") -> dict[str, float | None]:
    return {
        o: get(samples, "ragserve_ingest_documents_total", collection=collection, outcome=o)
        for o in OUTCOMES
    }


def _embedded(samples: Samples, collection: str = "default") -> tuple[float, float, float]:
    c = {"collection": collection}
    chunks = get(samples, "ragserve_ingest_chunks_total", **c)
    tokens = get(samples, "ragserve_ingest_embedding_tokens_total", **c)
    seconds = get(samples, "ragserve_ingest_embedding_seconds_total", **c)
    assert chunks is not None and tokens is not None and seconds is not None, samples
    return chunks, tokens, seconds


def _write_docs(docs: Path) -> None:
    """Two good one-chunk documents (each starts with its title: no heading is embedded) and a
    corrupt PDF."""
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "rivers.md").write_text("# Rivers\n\nRivers carry water from the hills to the sea.")
    (docs / "comets.md").write_text("# Comets\n\nComets grow tails of dust near the sun.")
    (docs / "broken.pdf").write_bytes(CORRUPT_PDF)


async def test_ingest_runs_count_documents_by_outcome_and_the_tokens_embedded(
    settings: Settings, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    telemetry = PrometheusTelemetry()
    docs = tmp_path / "docs"
    _write_docs(docs)

    async def ingest(prune: bool = False) -> int:
        async with open_core(settings, embedder=embedder) as core:
            summary = await build_pipeline(core).run(
                [docs], "default", prune=prune, telemetry=telemetry
            )
        return summary.chunks

    def tokens_stored() -> dict[str, int]:
        texts = [v[3] for v in edge_snapshot(settings.qdrant_dir / "default").values()]
        return {t.split()[1]: embedder.count_tokens(t) for t in texts}

    def samples() -> Samples:
        from prometheus_client import generate_latest

        return parse(generate_latest(telemetry.registry).decode())

    first_chunks = await ingest()
    after_first = samples()
    assert _documents(after_first) == {
        "added": 2,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "failed": 1,
    }
    chunks, tokens, _ = _embedded(after_first)  # the seconds: present, not a figure
    assert chunks == first_chunks == 2
    assert tokens == sum(tokens_stored().values())

    (docs / "rivers.md").write_text("# Rivers\n\nRivers freeze in winter and flood in spring.")
    (docs / "comets.md").unlink()
    second_chunks = await ingest(prune=True)
    after_second = samples()
    assert _documents(after_second) == {
        "added": 2,
        "updated": 1,
        "unchanged": 0,
        "deleted": 1,
        "failed": 2,  # the corrupt PDF is still there
    }
    chunks2, tokens2, seconds2 = _embedded(after_second)
    assert chunks2 - chunks == second_chunks == 1
    assert tokens2 - tokens == tokens_stored()["Rivers"]

    await ingest()  # nothing changed: documents counted unchanged, nothing embedded
    after_third = samples()
    assert _documents(after_third)["unchanged"] == 1
    assert _embedded(after_third) == (chunks2, tokens2, seconds2)


# -- `rag ingest --metrics-file / --pushgateway` --------------------------------------------


class _Gateway(BaseHTTPRequestHandler):
    """A Pushgateway's push endpoint (no Pushgateway can be installed here): it keeps what
    is pushed, as the real one does, and answers 200."""

    pushed: list[tuple[str, str, str]]

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"] or 0)).decode()
        self.pushed.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    pushed: list[tuple[str, str, str]] = []
    handler = type("Gateway", (_Gateway,), {"pushed": pushed})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pushed
    finally:
        server.shutdown()
        server.server_close()


def _rag(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, "RAG_DATA_DIR": str(data_dir), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_rag_ingest_writes_a_metrics_textfile_and_pushes_it_also_when_files_failed(
    tmp_path: Path, gateway: tuple[str, list[tuple[str, str, str]]]
) -> None:
    url, pushed = gateway
    docs, textfile = tmp_path / "docs", tmp_path / "textfile" / "ragserve_ingest.prom"
    _write_docs(docs)
    textfile.parent.mkdir()
    args = ["ingest", str(docs), "-c", "notes", "--json", "--metrics-file", str(textfile)]
    proc = _rag([*args, "--pushgateway", url], tmp_path / "data")
    assert proc.returncode == 1, proc.stderr  # the corrupt PDF failed; the rest landed
    summary = json.loads(proc.stdout)
    written = parse(textfile.read_text())
    assert _documents(written, "notes") == {
        "added": 2,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "failed": 1,
    }
    chunks, tokens, _ = _embedded(written, "notes")
    assert chunks == summary["chunks"] == 2
    assert tokens > chunks
    assert [p[:2] for p in pushed] == [("PUT", "/metrics/job/ragserve_ingest/collection/notes")]
    assert parse(pushed[0][2]) == written
    assert list(textfile.parent.iterdir()) == [textfile]  # replaced atomically: no temp left


def test_an_unreachable_pushgateway_is_a_warning_not_a_failed_ingest(
    tmp_path: Path, closed_port: int
) -> None:
    docs = tmp_path / "docs"
    _write_docs(docs)
    (docs / "broken.pdf").unlink()
    url = f"http://127.0.0.1:{closed_port}"
    proc = _rag(["ingest", str(docs), "--json", "--pushgateway", url], tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["added"] == 2
    assert f"warning: metrics not pushed to {url}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_metrics_file_in_a_missing_folder_is_refused_before_anything_is_ingested(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    _write_docs(docs)
    target = tmp_path / "nowhere" / "ingest.prom"
    proc = _rag(["ingest", str(docs), "--metrics-file", str(target)], tmp_path / "data")
    assert proc.returncode == 2
    assert f"--metrics-file: no folder {target.parent}" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_rag_ingest_help_explains_both_metrics_options(tmp_path: Path) -> None:
    proc = _rag(["ingest", "--help"], tmp_path / "data")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "--metrics-file PATH" in text and "textfile" in text
    assert "--pushgateway URL" in text and "ragserve_ingest" in text


# -- the upload route ------------------------------------------------------------------------


async def test_an_upload_moves_the_services_ingest_counters(
    settings: Settings, services: Services
) -> None:
    async with in_process_client(create_app(settings, services=services)) as client:
        files = [
            ("files", ("late.md", LATE)),
            ("files", ("broken.pdf", CORRUPT_PDF)),
        ]
        r = await client.post("/v1/collections/default/documents", files=files)
        assert r.status_code == 201, r.text
        first = parse((await client.get("/metrics")).text)
        assert _documents(first) == {
            "added": 1,
            "updated": 0,
            "unchanged": 0,
            "deleted": 0,
            "failed": 1,
        }
        embedded = _embedded(first)
        chunks, tokens, _ = embedded
        assert chunks == r.json()["chunks"] == 1
        assert tokens == services.embedder.count_tokens(LATE.decode())
        again = await client.post("/v1/collections/default/documents", files=files[:1])
        assert again.status_code == 200, again.text
        second = parse((await client.get("/metrics")).text)
        assert _documents(second)["unchanged"] == 1
        assert _embedded(second) == embedded  # nothing embedded: no counter moved
