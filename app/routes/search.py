"""POST /v1/search: retrieval only, through the LangChain retriever over the store."""

from __future__ import annotations

import time

from fastapi import APIRouter

from app.deps import ServicesDep
from app.errors import error_responses
from app.principal import CallerDep
from app.schemas import SearchHit, SearchRequest, SearchResponse, check_max_chars, to_domain_filters
from pipelines.retrieval import StoreRetriever

router = APIRouter(tags=["search"])


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=error_responses(400, 403, 404, 422, e404="The collection does not exist"),
    summary="Ranked chunks for a query (no generation)",
)
async def search(body: SearchRequest, caller: CallerDep, services: ServicesDep) -> SearchResponse:
    started = time.perf_counter()
    check_max_chars(services.settings.server.max_question_chars, "query", body.query)
    collection = body.collection or services.settings.default_collection
    retriever = StoreRetriever(
        service=services.retrieval, collection=collection, access=caller.read(collection)
    )
    docs = await retriever.ainvoke(
        body.query,
        k=body.k,
        mode=body.mode,
        filters=to_domain_filters(body.filters),
        min_score=body.min_score,
    )
    return SearchResponse(
        collection=collection,
        hits=[SearchHit.from_document(d) for d in docs],
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )
