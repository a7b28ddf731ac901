"""GET /v1/collections: the collections and their sizes (the chat page lists them)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ServicesDep
from app.schemas import CollectionList, CollectionOut

router = APIRouter(tags=["collections"])


@router.get(
    "/collections",
    response_model=CollectionList,
    summary="List collections with their document and chunk counts",
)
async def list_collections(services: ServicesDep) -> CollectionList:
    rows = []
    for name in await services.store.list_collections():
        s = await services.store.stats(name)
        rows.append(CollectionOut(name=s.name, documents=s.documents, chunks=s.chunks))
    return CollectionList(collections=rows)
