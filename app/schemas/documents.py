"""Collections and documents wire models: listings, upload results, deletions."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from pipelines.types import CollectionStats

_WHOLE = "null for a key that cannot read every document of the collection"


class CollectionOut(BaseModel):
    name: str
    documents: int = Field(description="Documents this key may read")
    chunks: int = Field(description="Chunks this key may read")
    size_bytes: int | None = Field(
        description="Disk the collection takes, in bytes: its folder under the data dir (the "
        "embedded store). null on a Qdrant server, whose API does not report it, and " + _WHOLE
    )
    last_ingest_at: datetime | None = Field(
        description="UTC time of the last write that changed the collection (an ingest, an "
        "upload, a deletion); null if it was never written since it was created (or not since "
        "this field exists), and " + _WHOLE
    )

    @classmethod
    def of(cls, stats: CollectionStats) -> CollectionOut:
        return cls(
            name=stats.name,
            documents=stats.documents,
            chunks=stats.chunks,
            size_bytes=stats.size_bytes,
            last_ingest_at=stats.last_ingest_at,
        )


class CollectionList(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "collections": [
                        {
                            "name": "default",
                            "documents": 3,
                            "chunks": 4,
                            "size_bytes": 1843200,
                            "last_ingest_at": "2026-11-30T09:12:44.120731Z",
                        }
                    ]
                }
            ]
        }
    }
    collections: list[CollectionOut]


class UploadedFile(BaseModel):
    source: str = Field(description="The file name: the document's source in search hits")
    doc_id: str | None = Field(description="The document's id (null for .jsonl corpora)")
    chunks: int = Field(description="Chunks the collection now holds for this file")


class FailedFile(BaseModel):
    source: str
    reason: str


class UploadResult(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "collection": "default",
                    "files": [
                        {"source": "manual.pdf", "doc_id": "4be3…", "chunks": 42},
                    ],
                    "added": 1,
                    "updated": 0,
                    "unchanged": 0,
                    "chunks": 42,
                    "failed": [{"source": "scan.pdf", "reason": "no text layer"}],
                    "seconds": 3.1,
                }
            ]
        }
    }
    collection: str
    files: list[UploadedFile]
    added: int = Field(description="Documents new to the collection")
    updated: int = Field(description="Documents whose content changed (chunks replaced)")
    unchanged: int = Field(description="Documents already stored with this content")
    chunks: int = Field(description="Chunks embedded and written by this upload")
    failed: list[FailedFile] = Field(description="Files (or corpus lines) skipped, with why")
    seconds: float


class DocumentOut(BaseModel):
    doc_id: str
    source: str
    chunks: int


class DocumentList(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "collection": "default",
                    "total": 1,
                    "documents": [{"doc_id": "4be3…", "source": "manual.pdf", "chunks": 42}],
                }
            ]
        }
    }
    collection: str
    total: int = Field(description="Documents in the collection (before limit/offset)")
    documents: list[DocumentOut]


class DeletedDocument(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [{"collection": "default", "doc_id": "4be3…", "deleted_chunks": 42}]
        }
    }
    collection: str
    doc_id: str
    deleted_chunks: int
