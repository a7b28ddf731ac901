"""The ONNX exports on disk: one folder per model and recipe, made once under a file lock."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from pipelines.embedder.export import EXPORT_VERSION, META, Unsupported, export, fingerprint
from pipelines.errors import ConfigError
from pipelines.settings import BUNDLED_EMBEDDING_MODEL

log = logging.getLogger(__name__)


def cached_export(
    model: str, path: str, cache_dir: Path, *, quantize: bool
) -> tuple[Path, dict[str, Any]] | None:
    """The export's folder and metadata, made on first use; None when the model cannot be
    exported (torch serves it)."""
    folder = cache_dir / f"{_slug(model)}-onnx{'-int8' if quantize else ''}"
    files = fingerprint(path)
    meta = _current(folder, files)
    if meta is None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            # One exporter at a time (the app and `rag ingest` may start together); the
            # others wait, then find the export done.
            with (cache_dir / f".{folder.name}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                meta = _current(folder, files)
                if meta is None:
                    log.info("exporting embedding model %s to ONNX (once) under %s", model, folder)
                    export(path, folder, quantize=quantize)
                    meta = _current(folder, files)
        except Unsupported as exc:
            log.warning("no ONNX export for %s (%s): using torch", model, exc)
            return None
        except OSError as exc:
            raise ConfigError(
                f"cannot write the embedding model export under {cache_dir} ({exc}); "
                "make the data dir writable or set RAG_EMBEDDING__BACKEND=torch"
            ) from exc
        if meta is None:
            raise ConfigError(f"the ONNX export under {folder} is unreadable; delete it")
    return folder, meta


def _slug(model: str) -> str:
    if model == BUNDLED_EMBEDDING_MODEL:
        return model.split(":", 1)[1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model).name or model).strip("-.") or "model"
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def _current(folder: Path, files: str) -> dict[str, Any] | None:
    """The export's metadata if it was made by this recipe from these model files."""
    try:
        meta: dict[str, Any] = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    ok = meta.get("version") == EXPORT_VERSION and meta.get("fingerprint") == files
    return meta if ok else None
