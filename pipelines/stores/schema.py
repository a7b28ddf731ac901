"""The collection layout both Qdrant backends create and read: vector names, indexes, names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.access import GROUPS_FIELD
from pipelines.errors import InvalidInput

DENSE = "dense"
SPARSE = "bm25"
# Payload fields indexed in every collection, in the order they are created (a collection
# opened without one of them gets it then).
PAYLOAD_INDEXES: dict[str, Literal["keyword", "integer"]] = {
    "doc_id": "keyword",
    "collection": "keyword",
    "source": "keyword",
    "content_hash": "keyword",
    "chunk_index": "integer",
    "path": "keyword",  # the ingest job's lookup of a file's documents (never a client's)
    GROUPS_FIELD: "keyword",  # every read of a key with groups filters on it
}
# What document_states() reads back, without vectors or text.
STATE_FIELDS = ["doc_id", "source", "path", "content_hash", "chunk_count", GROUPS_FIELD]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_collection_name(name: str) -> str:
    # fullmatch: `re.match` with `$` would let "default\n" through (a newline in a dir name)
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Layout:
    """The dense vectors an existing collection was built with, as its backend reports them."""

    dim: int | None  # None: the collection has no dense named vector
    distance: str | None  # lower case: "cosine", "dot", ...
    model: str | None = None  # the embedding model, where the backend records it

    def fits(self, dim: int) -> bool:
        return self.dim == dim and self.distance == "cosine"

    def mismatch(self, collection: str, dim: int, model: str) -> str:
        """What a user reads when the collection does not fit the configured embedder."""
        if self.dim is None:
            have = f"no '{DENSE}' named vector"
        else:
            have = f"{self.dim}-dim {self.distance} vectors"
            have += f" ({self.model})" if self.model else ""
        return (
            f"collection '{collection}' was built with {have}, but the configured embedder gives "
            f"{dim}-dim cosine vectors ({model}). Ingest into another collection (--collection "
            f"NAME), set RAG_EMBEDDING__MODEL back to the model it was built with, or delete "
            f"the collection and re-ingest."
        )


def dense_of(vector: Any) -> list[float]:
    """The dense vector of a retrieved record (named vectors or a bare list; [] if none)."""
    named = vector.get(DENSE) if isinstance(vector, dict) else vector
    return [float(x) for x in named] if isinstance(named, list) else []
