"""The CLI beside a running server (issue 18): while a service holds the embedded store,
`rag stats`, `rag search`, `rag ingest` and `rag ask` use its API, found through the record
`rag serve` writes in the data dir; a stale record is ignored; `rag serve --port N` records
that port and removes the record on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cli.remote import read_record, record_path, record_service, running_service
from pipelines.core import open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.processes import stop
from tests.support.seeds import ingest_samples
from tests.support.servers import ThreadedLiveServer
from tests.support.sockets import free_port

pytestmark = pytest.mark.slow

KEY = "beside-the-server-test-key"
CLI_TIMEOUT_S = 300
SERVE_START_S = 240.0


def rag(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, "RAG_DATA_DIR": str(data_dir), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def said(done: subprocess.CompletedProcess[str]) -> str:
    return " ".join(done.stderr.split())


@pytest.fixture(scope="module")
def live(
    embedder: SentenceTransformerEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadedLiveServer]:
    """A service holding the store (the samples ingested, a bootstrap key), recorded in its
    data dir as `rag serve` records itself."""
    data = tmp_path_factory.mktemp("beside") / "data"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data,
        server={"api_key": KEY},
    )
    server = ThreadedLiveServer(settings, embedder, ScriptedGenerator())
    server.start()
    record_service(data, server.url)
    try:
        yield server
    finally:
        server.stop()


def held(live: ThreadedLiveServer, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    done = rag(args, live.settings.data_dir, **{"RAG_SERVER__API_KEY": KEY, **env})
    assert f"the store is held by the service at {live.url}: using its API" in said(done)
    return done


def test_stats_beside_a_running_service_lists_its_collections(live: ThreadedLiveServer) -> None:
    done = held(live, ["stats", "--json"])
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["collections"]}
    assert rows["default"]["documents"] >= 3 and rows["default"]["chunks"] >= 4
    table = held(live, ["stats"])
    assert table.returncode == 0, table.stderr
    assert "default" in table.stdout and "documents" in table.stdout


def test_search_beside_a_running_service_answers_through_it(live: ThreadedLiveServer) -> None:
    done = held(live, ["search", "Which planet has the hottest surface?", "-k", "2", "--json"])
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert hits[0]["source"] == "solar-system.html"
    assert "Venus" in hits[0]["text"] and hits[0]["chunk_id"]
    text = held(live, ["search", "Which planet has the hottest surface?"])
    assert text.returncode == 0, text.stderr
    assert "solar-system.html" in text.stdout


def test_ingest_into_the_open_collection_uploads_through_the_service(
    live: ThreadedLiveServer, tmp_path: Path
) -> None:
    folder = tmp_path / "notes"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "kettle.md").write_text(
        "# The kettle\n\nThe QUOKKA-93 kettle descales with citric acid every second month."
    )
    (folder / "prices.csv").write_text("a,b\n1,2\n")  # not a supported type
    done = held(live, ["ingest", str(folder)])
    assert done.returncode == 0, done.stderr
    summary = said(done)
    assert "default: 1 added, 0 updated, 0 unchanged, 0 deleted, 0 failed" in summary
    assert "skipped: 1 .csv" in summary
    found = held(live, ["search", "QUOKKA-93 kettle descaling", "-k", "1", "--json"])
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["source"] == "kettle.md"
    again = held(live, ["ingest", str(folder), "--json"])
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) | {"seconds": 0} == {
        "collection": "default",
        "files": 1,
        "added": 0,
        "updated": 0,
        "unchanged": 1,
        "deleted": 0,
        "chunks": 0,
        "failed": [],
        "skipped": {".csv": 1},
        "seconds": 0,
    }


def test_ingest_through_the_service_reports_each_failed_file(
    live: ThreadedLiveServer, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.txt").write_text("The WOMBAT-17 lamp runs on two AA batteries.")
    (folder / "empty.txt").write_text("")
    (folder / "sub" / "good.txt").write_text("Another good.txt, which the service would merge.")
    done = held(live, ["ingest", str(folder), "-c", "mixed", "--json"])
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["added"], summary["files"]) == (1, 2)
    failed = {f["source"]: f["reason"] for f in summary["failed"]}
    assert failed["empty.txt"] == "empty file"
    assert "the same file name as good.txt" in failed["sub/good.txt"]
    assert len(failed) == 2


def test_ask_finds_the_recorded_service(live: ThreadedLiveServer) -> None:
    done = rag(
        ["ask", "Which planet has the hottest surface?"],
        live.settings.data_dir,
        RAG_SERVER__API_KEY=KEY,
        RAG_SERVER__PORT=str(free_port()),  # not where the service is: the record says
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Venus is hot [1]." in done.stdout
    assert "Sources" in done.stdout and "solar-system.html" in done.stdout


def test_without_the_key_the_service_refuses_clearly(live: ThreadedLiveServer) -> None:
    done = held(live, ["stats"], RAG_SERVER__API_KEY="")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"the service at {live.url} refused the request (401)" in said(done)
    assert "--api-key or RAG_SERVER__API_KEY" in said(done)
    assert "Traceback" not in done.stderr


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_record_of_a_dead_process_or_a_silent_url_is_ignored(
    live: ThreadedLiveServer, tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    record_service(tmp_path, live.url, pid=_dead_pid())
    assert running_service(settings) is None
    record_service(tmp_path, f"http://127.0.0.1:{free_port()}")  # this process, nobody there
    assert running_service(settings) is None
    record_service(tmp_path, live.url)
    found = running_service(settings)
    assert found is not None and found.url == live.url


async def test_a_stale_record_leaves_the_command_on_the_store(
    settings: Settings, embedder: SentenceTransformerEmbedder
) -> None:
    async with open_core(settings, embedder=embedder) as core:
        await ingest_samples(core)
    record_service(settings.data_dir, f"http://127.0.0.1:{free_port()}", pid=_dead_pid())
    done = rag(["stats", "--json"], settings.data_dir)
    assert done.returncode == 0, done.stderr
    assert "held by the service" not in done.stderr
    assert [r["name"] for r in json.loads(done.stdout)["collections"]] == ["default"]


def test_rag_serve_records_its_port_and_removes_the_record_on_ctrl_c(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(data),
        # An upstream generator nobody serves: no vLLM loads, search serves at once.
        "RAG_LLM__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + SERVE_START_S
        while (record := read_record(data)) is None:  # the condition: the record is there
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "rag serve wrote no record"
            time.sleep(0.1)
        assert record.url == f"http://127.0.0.1:{port}" and record.pid == proc.pid
        assert httpx.get(f"{record.url}/healthz", timeout=10).status_code == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert not record_path(data).exists(), err.decode()
    finally:
        stop(proc)
