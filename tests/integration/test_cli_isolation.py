"""`rag search` stays in the collection it names: the other tenant's chunks never come back,
whatever the query asks for (the CLI reads the data dir itself, with full access to the one
collection it opens)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.tenancy import CODEWORDS, DOCS


def rag(args: list[str], data_dir: Path) -> str:
    env = {**os.environ, "RAG_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rag_search_never_returns_the_other_collections_chunks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for collection, files in DOCS.items():
        folder = tmp_path / collection
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        rag(["ingest", str(folder), "--collection", collection], data)
    query = "payroll espresso BRONZE-42 AZURE-17 collection beta alpha"
    for own, other in (("alpha", "beta"), ("beta", "alpha")):
        for mode in ("dense", "sparse", "hybrid"):
            out = rag(["search", query, "-c", own, "-k", "10", "--mode", mode, "--json"], data)
            hits = json.loads(out)
            assert hits, (own, mode)
            assert all(CODEWORDS[own] in hit["text"] for hit in hits), (own, mode)
            assert CODEWORDS[other] not in out
