"""The store's own terms, which each backend translates: nearest queries, filters, vectors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pipelines.stores.schema import DENSE, SPARSE
from pipelines.types import EmbeddedChunk, Filters, Range, Scalar, SparseVector

C = TypeVar("C")  # a backend's condition
F = TypeVar("F")  # a backend's filter
V = TypeVar("V")  # a backend's sparse vector


@dataclass(frozen=True, slots=True)
class DenseNearest:
    """A dense nearest-neighbour query with its search parameters."""

    vector: list[float]
    limit: int
    filters: Filters | None
    with_payload: bool  # False: ids and scores only (a candidate list for fusion or MMR)
    hnsw_ef: int
    exact: bool
    quantized: bool  # walk the int8 copies (False: the original vectors only)
    rescore: bool  # rescore the int8 candidates with the original vectors
    oversampling: float


@dataclass(frozen=True, slots=True)
class SparseNearest:
    """A sparse (BM25 terms, IDF applied by the engine) nearest-neighbour query."""

    vector: SparseVector
    limit: int
    filters: Filters | None
    with_payload: bool


Nearest = DenseNearest | SparseNearest


@dataclass(frozen=True, slots=True)
class FilterSyntax(Generic[C, F]):
    """How a backend spells a payload condition and a conjunction; `filter` reads `Filters`
    with it. A float is matched as the range [value, value] (a float payload is no keyword)."""

    match: Callable[[str, str | int | bool], C]
    match_any: Callable[[str, list[Scalar]], C]
    in_range: Callable[[str, Range], C]
    conjunction: Callable[[list[C], list[C]], F]  # (must, must_not); either may be empty

    def filter(self, must: Filters | None, must_not: Filters | None = None) -> F | None:
        """Every `must` condition holds and no `must_not` one; None where there are none."""
        if not must and not must_not:  # most searches
            return None
        yes, no = self._conditions(must), self._conditions(must_not)
        return self.conjunction(yes, no) if yes or no else None

    def _conditions(self, filters: Filters | None) -> list[C]:
        conditions: list[C] = []
        for key, value in (filters or {}).items():
            if isinstance(value, Range):
                conditions.append(self.in_range(key, value))
            elif isinstance(value, list):
                conditions.append(self.match_any(key, value))
            elif isinstance(value, float):
                conditions.append(self.in_range(key, Range(gte=value, lte=value)))
            else:
                conditions.append(self.match(key, value))
        return conditions


def vectors_of(p: EmbeddedChunk, sparse: Callable[[SparseVector], V]) -> dict[str, Any]:
    """A point's vectors by name: the dense one, and the sparse one if it has any terms."""
    vectors: dict[str, Any] = {DENSE: p.dense}
    if p.sparse is not None and p.sparse.indices:
        vectors[SPARSE] = sparse(p.sparse)
    return vectors
