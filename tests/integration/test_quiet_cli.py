"""A first `rag ingest` (no model export cached yet) shows our progress and our report of a
corrupt file, and nothing the libraries print for themselves: no transformers "Loading
weights" bar, no pypdf warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RAG = Path(sys.executable).with_name("rag")
# What the libraries say on their own, as seen before they were silenced.
LIBRARY_NOISE = ("Loading weights", "invalid pdf header", "EOF marker not found")


def test_first_ingest_reports_a_corrupt_pdf_once_without_library_noise(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "venus.txt").write_text("Venus has the hottest surface of the planets: 464 C.\n")
    (docs / "broken.pdf").write_bytes(b"this is not a pdf at all")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    # A fresh data dir: the embedding model is exported (loaded with transformers) on this run.
    env |= {"RAG_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}

    done = subprocess.run(
        [str(RAG), "ingest", str(docs)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # one file failed
    assert "1 added" in output and "1 failed" in output, output
    assert "failed broken.pdf: corrupt or unreadable PDF" in output, output
    noise = [text for text in LIBRARY_NOISE if text.lower() in output.lower()]
    assert noise == [], f"library output on a first ingest: {noise}\n{output}"
