"""The in-process engine's CPU dtype: bf16 only where the CPU computes it natively."""

from __future__ import annotations

import pytest

from pipelines.generators.vllm_engine import cpu_dtype
from pipelines.settings import LLMSettings


@pytest.mark.parametrize(
    ("machine", "native_bf16", "expected"),
    [
        ("x86_64", False, "float32"),  # AVX2 only: oneDNN has no bf16 matmul
        ("x86_64", True, "bfloat16"),  # AVX512-BF16 or AMX
        ("AMD64", False, "float32"),
        ("aarch64", False, "bfloat16"),  # vLLM's CPU build treats Arm bf16 as native
        ("arm64", False, "bfloat16"),
    ],
)
def test_cpu_dtype_is_bfloat16_only_where_the_cpu_computes_it_natively(
    machine: str, native_bf16: bool, expected: str
) -> None:
    assert cpu_dtype(machine, native_bf16) == expected


def test_dtype_setting_defaults_to_auto_and_rejects_unknown_names() -> None:
    assert LLMSettings().dtype == "auto"
    assert LLMSettings(dtype="float32").dtype == "float32"
    with pytest.raises(ValueError, match="dtype"):
        LLMSettings(dtype="fp8")  # type: ignore[arg-type]
