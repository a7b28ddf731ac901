"""/v1/search, collections, health, metrics and OpenAPI on the real app over the samples."""

from __future__ import annotations

import json

import httpx
import pytest


async def test_search_returns_ranked_chunks_with_sources(client: httpx.AsyncClient) -> None:
    # min_score 0: the best 2 however weak (the second is off the question's topic).
    question = {"query": "How hot is the surface of Venus?", "k": 2, "min_score": 0}
    r = await client.post("/v1/search", json=question)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["collection"] == "default"
    hits = body["hits"]
    assert len(hits) == 2
    assert "464 degrees" in hits[0]["text"]
    assert hits[0]["source"].endswith("solar-system.html")
    assert hits[0]["title"] == "The Solar System: a short field guide"
    assert hits[0]["score"] >= hits[1]["score"]
    assert {"doc_id", "chunk_id", "chunk_index"} <= hits[0].keys()
    assert r.headers["x-request-id"]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
async def test_every_mode_finds_the_coffee_ratio(client: httpx.AsyncClient, mode: str) -> None:
    r = await client.post(
        "/v1/search", json={"query": "grams of coffee per litre of water", "k": 1, "mode": mode}
    )
    assert r.status_code == 200, r.text
    assert "60 grams" in r.json()["hits"][0]["text"]


async def test_filter_by_source_restricts_hits(client: httpx.AsyncClient) -> None:
    # min_score 0: the coffee document is off the query's topic, under the relevance floor.
    query = {"query": "planets", "k": 5, "min_score": 0}
    first = await client.post("/v1/search", json=query)
    coffee = next(h["source"] for h in first.json()["hits"] if "coffee" in h["source"])
    r = await client.post("/v1/search", json={**query, "filters": {"source": coffee}})
    assert r.status_code == 200
    assert {h["source"] for h in r.json()["hits"]} == {coffee}


async def test_filter_by_doc_id_list_restricts_hits(client: httpx.AsyncClient) -> None:
    hits = (await client.post("/v1/search", json={"query": "coffee", "k": 5})).json()["hits"]
    doc = hits[-1]["doc_id"]
    r = await client.post("/v1/search", json={"query": "coffee", "filters": {"doc_id": [doc]}})
    assert {h["doc_id"] for h in r.json()["hits"]} == {doc}


async def test_unknown_collection_is_404_with_envelope(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/search", json={"query": "x", "collection": "nope"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "collection_not_found"
    assert "nope" in err["message"]
    assert err["request_id"]
    assert err["retryable"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x" * 4001}, "query"),
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "k": 1000}, "k"),
        ({"query": "x", "mode": "fuzzy"}, "mode"),
        ({"query": "x", "colection": "typo"}, "colection"),
        ({"query": "x", "filters": {"page": {}}}, "filters.page"),
    ],
)
async def test_invalid_requests_are_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    r = await client.post("/v1/search", json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request"
    assert any(d["field"].startswith(field) for d in err["details"]), err
    assert "Traceback" not in r.text


async def test_malformed_json_is_400_not_500(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["param"] == "body"
    assert "not valid JSON" in error["message"]


async def test_bad_collection_name_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/search", json={"query": "x", "collection": "../../etc"})
    assert r.status_code == 422
    assert "invalid collection name" in r.json()["error"]["message"]


async def test_empty_collection_returns_no_hits(
    client: httpx.AsyncClient, services: object
) -> None:
    from app.services import Services

    assert isinstance(services, Services)
    await services.store.ensure_collection("empty", create=True)
    r = await client.post("/v1/search", json={"query": "anything", "collection": "empty"})
    assert r.status_code == 200
    assert r.json()["hits"] == []


async def test_health_and_readiness_report_store_and_search_ok(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["details"]["store"] == "ok"
    assert ready.json()["details"]["search"] == "ready"


async def test_openapi_and_the_docs_page_document_search(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/search" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_collections_are_listed_with_counts_size_and_last_ingest(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/v1/collections")
    assert r.status_code == 200
    (row,) = r.json()["collections"]
    assert {k: row[k] for k in ("name", "documents", "chunks")} == {
        "name": "default",
        "documents": 3,
        "chunks": 4,
    }
    assert row["size_bytes"] > 0 and row["last_ingest_at"].endswith("Z")


async def test_metrics_count_requests_per_route(client: httpx.AsyncClient) -> None:
    await client.post("/v1/search", json={"query": "coffee"})
    text = (await client.get("/metrics")).text
    assert 'ragserve_requests_total{method="POST",route="/v1/search",status="200"} 1.0' in text


async def test_openapi_gives_every_endpoint_an_example(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    text = json.dumps(spec)
    for path in (
        "/v1/search",
        "/v1/ask",
        "/v1/chat/completions",
        "/v1/models",
        "/v1/collections",
        "/readyz",
    ):
        assert path in spec["paths"], path
    assert text.count('"example') >= 6
