"""GET /v1/collections: the collections, their sizes and last ingest (the chat page lists them)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ServicesDep
from app.principal import CallerDep
from app.schemas import CollectionList, CollectionOut

router = APIRouter(tags=["collections"])


@router.get(
    "/collections",
    response_model=CollectionList,
    summary="List the collections the key may read: the documents and chunks it sees, the "
    "size on disk and the last ingest",
)
async def list_collections(caller: CallerDep, services: ServicesDep) -> CollectionList:
    rows = []
    for name in caller.visible(await services.store.list_collections()):
        rows.append(CollectionOut.of(await services.store.stats(name, access=caller.access)))
    return CollectionList(collections=rows)
