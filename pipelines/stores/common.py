"""What both Qdrant adapters share: names, vector layout, payload fields, id scheme."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pipelines.errors import InvalidInput
from pipelines.types import DocState

DENSE = "dense"
SPARSE = "bm25"
# Payload fields with a keyword index in every collection.
KEYWORD_INDEXES = ("doc_id", "collection", "source", "content_hash")
# What document_states() reads back, without vectors or text.
STATE_FIELDS = ["doc_id", "source", "content_hash", "chunk_count"]
SCROLL_PAGE = 1024

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_collection_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"invalid collection name '{name}': use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def mismatch_message(collection: str, have: str, want: str) -> str:
    return (
        f"collection '{collection}' was built with {have}, but the configured embedder gives "
        f"{want}. Ingest into another collection (--collection NAME), set RAG_EMBEDDING__MODEL "
        f"back to the model it was built with, or delete the collection and re-ingest."
    )


def add_states(states: dict[str, DocState], payloads: Iterable[dict[str, Any]]) -> None:
    """Fold scrolled payloads (STATE_FIELDS) into per-document states."""
    for pl in payloads:
        doc_id = str(pl.get("doc_id"))
        st = states.get(doc_id)
        if st is None:
            st = states[doc_id] = DocState(doc_id=doc_id, source=str(pl.get("source")))
        st.chunks += 1
        st.hashes.add(str(pl.get("content_hash")))
        st.expected_chunks = int(pl.get("chunk_count") or 0)
