"""GET /v1/collections: the collections and their sizes (the chat page lists them)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ServicesDep
from app.principal import CallerDep
from app.schemas import CollectionList, CollectionOut

router = APIRouter(tags=["collections"])


@router.get(
    "/collections",
    response_model=CollectionList,
    summary="List the collections the key may read, with the documents and chunks it sees",
)
async def list_collections(caller: CallerDep, services: ServicesDep) -> CollectionList:
    rows = []
    for name in caller.visible(await services.store.list_collections()):
        s = await services.store.stats(name, access=caller.access)
        rows.append(CollectionOut(name=s.name, documents=s.documents, chunks=s.chunks))
    return CollectionList(collections=rows)
