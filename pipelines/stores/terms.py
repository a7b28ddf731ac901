"""The store's own terms, which each backend translates: nearest queries, filters, vectors."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pipelines.errors import InvalidInput
from pipelines.stores.schema import DENSE, SPARSE
from pipelines.types import PRIVATE_FIELDS, EmbeddedChunk, Filters, Range, Scalar, SparseVector

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


# -- what a filter may say: checked once here, for the API's models and the store alike ------

MAX_FILTERS = 32
MAX_FILTER_KEY = 128
MAX_FILTER_STRING = 4096
MAX_FILTER_LIST = 256
INT64 = (-(2**63), 2**63 - 1)
# A payload field as both backends read it: dotted parts (`meta.lang`), no JSON-path syntax.
FILTER_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$"
_KEY = re.compile(FILTER_KEY_PATTERN)
FILTER_KEY_RULE = (
    f"a filter field is a payload field name of at most {MAX_FILTER_KEY} characters: "
    "letters, digits, '_' or '-', starting with a letter or '_', with '.' between nested names"
)
FILTER_VALUE_RULE = (
    f"a filter value is a string (at most {MAX_FILTER_STRING} characters), an integer "
    "(64-bit), a boolean, a finite number (matched as the range [value, value]), a list of "
    f"1-{MAX_FILTER_LIST} strings or of 1-{MAX_FILTER_LIST} integers (any of), or a range "
    "object with at least one of gt, gte, lt, lte (finite numbers)"
)


def filter_key_problem(key: object) -> str | None:
    """Why `key` is no filter field (None: it is one). A private field (a file's server path)
    is none: matching on it would let a client probe the server's paths."""
    if isinstance(key, str) and len(key) <= MAX_FILTER_KEY and _KEY.fullmatch(key):
        if key.split(".", 1)[0] in PRIVATE_FIELDS:
            return f"'{key}' is not a filter field (use 'source', the document's display name)"
        return None
    return FILTER_KEY_RULE


def _is_int64(value: object) -> bool:
    return type(value) is int and INT64[0] <= value <= INT64[1]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def filter_value_problem(value: object) -> str | None:
    """Why `value` is no filter value both backends can match (None: it is one). A list holds
    strings or integers only: Qdrant's match-any takes no floats or booleans."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        ok = len(value) <= MAX_FILTER_STRING
    elif isinstance(value, int):
        ok = _is_int64(value)
    elif isinstance(value, float):
        ok = math.isfinite(value)
    elif isinstance(value, list):
        ok = 0 < len(value) <= MAX_FILTER_LIST and (
            all(isinstance(v, str) and len(v) <= MAX_FILTER_STRING for v in value)
            or all(_is_int64(v) for v in value)
        )
    elif isinstance(value, Range):
        bounds = [b for b in (value.gt, value.gte, value.lt, value.lte) if b is not None]
        ok = bool(bounds) and all(_is_number(b) and math.isfinite(b) for b in bounds)
    else:
        ok = False
    return None if ok else FILTER_VALUE_RULE


def check_filters(filters: Mapping[str, Any] | None) -> Filters | None:
    """`filters` when every field and value is one the store can match; else InvalidInput
    naming the first bad field (`filters.<key>`) and what is accepted."""
    if not filters:
        return None
    if len(filters) > MAX_FILTERS:
        raise InvalidInput(f"filters: at most {MAX_FILTERS} fields")
    for key, value in filters.items():
        problem = filter_key_problem(key) or filter_value_problem(value)
        if problem:
            raise InvalidInput(f"filters.{key}: {problem}")
    return dict(filters)


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
