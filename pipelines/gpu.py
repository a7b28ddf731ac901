"""GPU utilisation and memory through NVML (what `nvidia-smi` reads), for the metrics.

Nothing here is required: without an NVIDIA driver (a CPU machine) or without NVML's Python
bindings, `GpuProbe.read()` answers no samples, so the metrics are absent rather than a
misleading zero. The bindings are `pynvml` from the `nvidia-ml-py` package, or the copy vLLM
ships (`vllm.third_party.pynvml`, present wherever the GPU build is installed). NVML is
looked for once, at the first read, and only where its shared library exists: importing vLLM
on a CPU machine to learn that there is no GPU would cost seconds.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_BINDINGS = ("pynvml", "vllm.third_party.pynvml")


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One device now: `utilization` is the fraction of the last sample period a kernel ran
    (NVML's gpu utilisation, 0–1)."""

    index: int
    utilization: float
    memory_used_bytes: int
    memory_total_bytes: int


class GpuProbe:
    """Reads every NVIDIA device through NVML; no samples where there is none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []
        self._looked = False

    def read(self) -> list[GpuSample]:
        with self._lock:
            if not self._looked:
                self._looked = True
                self._nvml, self._handles = _open_nvml()
            nvml, handles = self._nvml, self._handles
        samples = []
        for index, handle in handles:
            try:
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # a device lost (Xid, reset): skip it, keep the others
                log.debug("NVML read of GPU %d failed: %s", index, exc)
                continue
            samples.append(
                GpuSample(
                    index=index,
                    utilization=float(rates.gpu) / 100.0,
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                )
            )
        return samples


def _open_nvml() -> tuple[Any, list[tuple[int, Any]]]:
    """NVML initialised and a handle per device, or (None, []) where there is no NVML."""
    if not _driver_library_present():
        return None, []
    for name in _BINDINGS:
        try:
            nvml = importlib.import_module(name)
        except ImportError:
            continue
        try:
            nvml.nvmlInit()
            count = int(nvml.nvmlDeviceGetCount())
            handles = [(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        except Exception as exc:  # a library without a working driver
            log.info("NVML present but unusable (%s): no GPU metrics", exc)
            return None, []
        log.info("GPU metrics through NVML (%s): %d device(s)", name, len(handles))
        return nvml, handles
    log.info("NVML's library is present but no Python bindings are (pip install nvidia-ml-py)")
    return None, []


def _driver_library_present() -> bool:
    """Whether the driver's NVML library loads (by its soname, as the bindings load it)."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True
