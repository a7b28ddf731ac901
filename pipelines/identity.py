"""Deterministic identities: a document from (collection, source key), a chunk from (doc, index)."""

from __future__ import annotations

import hashlib
import uuid

_CHUNK_NS = uuid.UUID("6b0f3e4e-5c1a-4f7b-9a55-2f1f1c7f3a10")


def document_id(collection: str, key: str) -> str:
    return hashlib.sha256(f"{collection}\x1f{key}".encode()).hexdigest()[:32]


def chunk_point_id(doc_id: str, chunk_index: int) -> str:
    """Re-ingesting a document overwrites its own points instead of adding new ones."""
    return str(uuid.uuid5(_CHUNK_NS, f"{doc_id}\x1f{chunk_index}"))


def content_hash(text: str, recipe: str) -> str:
    """Hash of the extracted text and of how it is chunked/embedded: either change re-embeds."""
    return hashlib.sha256(f"{recipe}\x1e{text}".encode()).hexdigest()
