"""Reading a Prometheus text exposition back in tests: every sample by name and labels."""

from __future__ import annotations

import ctypes

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a `/metrics` body (or a textfile), by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels; None when there is none."""
    return samples.get((name, frozenset(labels.items())))


def has_nvml() -> bool:
    """Whether an NVIDIA driver is here (then GPU metrics are expected, not absent)."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True
