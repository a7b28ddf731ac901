"""Stores filled for tests: the bundled sample documents through the real ingest job."""

from __future__ import annotations

from pathlib import Path

from ingest.job import build_pipeline
from ingest.pipeline import IngestSummary
from pipelines.core import Core

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


async def ingest_samples(core: Core, collection: str = "default") -> IngestSummary:
    """The bundled sample documents (three files, four chunks) through the real ingest job."""
    return await build_pipeline(core).run([SAMPLES], collection)
