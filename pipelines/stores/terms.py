"""The store's own terms, which each backend translates: nearest queries, filters, vectors.

A read's `Selection` is a caller's filters and its document access (pipelines/access.py) in
one: `FilterSyntax.select` spells both as one engine filter, so the access condition is part
of every vector query, scroll and count, never a filter applied to results afterwards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pipelines.access import GROUPS_FIELD
from pipelines.errors import InvalidInput
from pipelines.stores.schema import DENSE, SPARSE
from pipelines.types import PRIVATE_FIELDS, EmbeddedChunk, Filters, Range, Scalar, SparseVector

C = TypeVar("C")  # a backend's condition
F = TypeVar("F")  # a backend's filter
V = TypeVar("V")  # a backend's sparse vector


@dataclass(frozen=True, slots=True)
class Selection:
    """What a read selects: the points matching every `filters` condition and, where `groups`
    is set, only public ones (an empty or absent access list, GROUPS_FIELD) and those whose
    access list shares one of these groups. `groups` None: every document."""

    filters: Filters | None = None
    groups: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class DenseNearest:
    """A dense nearest-neighbour query with its search parameters."""

    vector: list[float]
    limit: int
    selection: Selection
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
    selection: Selection
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


# Why a private field is no filter field, in the words a client reads.
_PRIVATE_HINTS = {
    "path": "use 'source', the document's display name",
    GROUPS_FIELD: "a document's groups are applied from the API key, not chosen per request",
}


def filter_key_problem(key: object) -> str | None:
    """Why `key` is no filter field (None: it is one). A private field is none: matching on a
    file's server path would let a client probe the server's paths, on a document's groups
    probe (or, with a negation, work around) the access lists."""
    if isinstance(key, str) and len(key) <= MAX_FILTER_KEY and _KEY.fullmatch(key):
        field = key.split(".", 1)[0]
        if field in PRIVATE_FIELDS:
            hint = _PRIVATE_HINTS.get(field, "a field the store keeps for itself")
            return f"'{key}' is not a filter field ({hint})"
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
    """How a backend spells a payload condition, a disjunction and a conjunction; `filter`
    reads `Filters` with it, `select` a read's `Selection`. A float is matched as the range
    [value, value] (a float payload is no keyword)."""

    match: Callable[[str, str | int | bool], C]
    match_any: Callable[[str, list[Scalar]], C]
    in_range: Callable[[str, Range], C]
    is_empty: Callable[[str], C]  # the field is absent, null or an empty list
    disjunction: Callable[[list[C]], C]  # at least one of these (one nested condition)
    conjunction: Callable[[list[C], list[C]], F]  # (must, must_not); either may be empty

    def filter(self, must: Filters | None, must_not: Filters | None = None) -> F | None:
        """Every `must` condition holds and no `must_not` one; None where there are none."""
        if not must and not must_not:  # most searches
            return None
        yes, no = self._conditions(must), self._conditions(must_not)
        return self.conjunction(yes, no) if yes or no else None

    def select(self, selection: Selection) -> F | None:
        """The selection's filters, and its access condition as one more `must` condition:
        public (no groups), or sharing one of the caller's groups."""
        if selection.groups is None:
            return self.filter(selection.filters)
        public = self.is_empty(GROUPS_FIELD)
        if selection.groups:
            shared = self.match_any(GROUPS_FIELD, sorted(selection.groups))
            visible = self.disjunction([public, shared])
        else:  # a caller without groups: public documents only
            visible = public
        return self.conjunction([*self._conditions(selection.filters), visible], [])

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
