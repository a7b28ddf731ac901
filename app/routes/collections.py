"""GET /v1/collections: the collections and their sizes (the chat page lists them)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.deps import ServicesDep

router = APIRouter(tags=["collections"])


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int


class CollectionList(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [{"collections": [{"name": "default", "documents": 3, "chunks": 4}]}]
        }
    }
    collections: list[CollectionOut]


@router.get(
    "/v1/collections",
    response_model=CollectionList,
    summary="List collections with their document and chunk counts",
)
async def list_collections(services: ServicesDep) -> CollectionList:
    rows = []
    for name in await services.store.list_collections():
        s = await services.store.stats(name)
        rows.append(CollectionOut(name=s.name, documents=s.documents, chunks=s.chunks))
    return CollectionList(collections=rows)
