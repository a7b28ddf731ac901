"""POST /v1/search: retrieval only, through the LangChain retriever over the store."""

from __future__ import annotations

import time

from fastapi import APIRouter

from app.deps import ServicesDep
from app.schemas import SearchHit, SearchRequest, SearchResponse, to_domain_filters
from pipelines.retrieval import StoreRetriever, document_to_hit

router = APIRouter(tags=["search"])

_ERRORS = {
    404: {"description": "The collection does not exist"},
    422: {"description": "Invalid request: the message names the field"},
}


@router.post(
    "/v1/search",
    response_model=SearchResponse,
    responses=_ERRORS,  # type: ignore[arg-type]
    summary="Ranked chunks for a query (no generation)",
)
async def search(body: SearchRequest, services: ServicesDep) -> SearchResponse:
    started = time.perf_counter()
    collection = body.collection or services.settings.default_collection
    retriever = StoreRetriever(service=services.retrieval, collection=collection)
    docs = await retriever.ainvoke(
        body.query, k=body.k, mode=body.mode, filters=to_domain_filters(body.filters)
    )
    hits = [SearchHit.model_validate(document_to_hit(d).to_dict()) for d in docs]
    return SearchResponse(
        collection=collection,
        hits=hits,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )
