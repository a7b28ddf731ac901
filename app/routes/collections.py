"""GET /v1/collections: the collections, their sizes and last ingest (the chat page lists them);
DELETE /v1/collections/{collection}: a collection and everything in it, for an admin."""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, Response, status

from app.deps import ServicesDep
from app.errors import error_responses
from app.principal import CallerDep
from app.schemas import CollectionList, CollectionOut
from pipelines.errors import CollectionNotFound
from pipelines.stores.schema import check_collection_name

log = logging.getLogger(__name__)
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


@router.delete(
    "/collections/{collection}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(403, 404, 422, e404="The collection does not exist"),
    summary="Delete a collection and every document in it (admin role; cannot be undone)",
)
async def delete_collection(collection: str, caller: CallerDep, services: ServicesDep) -> Response:
    check_collection_name(collection)
    # Dropping a collection takes every group's documents with it: more than a writer's
    # delete of documents it can see, so it is the admin's (and within the key's scope).
    caller.require("admin")
    caller.write(collection)
    async with services.ingest_lock:  # not under an upload that is writing into it
        if collection not in await services.store.list_collections():
            raise CollectionNotFound(collection)
        await services.store.drop_collection(collection)
        await anyio.to_thread.run_sync(services.originals.remove_collection, collection)
    log.info("deleted collection '%s'", collection)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
