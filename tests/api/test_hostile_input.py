"""Hostile-but-honest input (issue 14): bad filters, names, JSON and types are a 422 naming the
field, never a 500; an unexpected error still ends its response cleanly."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.services import Services
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import live_server


@pytest.fixture
def generator(services: Services) -> ScriptedGenerator:
    gen = ScriptedGenerator()
    services.set_generator(gen)
    return gen


def _body(route: str, filters: Any) -> dict[str, Any]:
    """The smallest valid request of each retrieval route, with these filters."""
    if route == "/v1/search":
        return {"query": "planets", "filters": filters}
    if route == "/v1/chat/completions":
        return {
            "model": "rag:default",
            "messages": [{"role": "user", "content": "How hot is Venus?"}],
            "filters": filters,
        }
    return {"question": "How hot is Venus?", "filters": filters}


ROUTES = ["/v1/search", "/v1/ask", "/v1/ask/stream", "/v1/chat/completions"]


def _assert_422_naming(r: httpx.Response, field: str) -> str:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == field, error
    return str(error["message"])


# -- finding 1: filters -----------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("key", ["", "$where", "a b", "a..b", "a["])
async def test_filter_key_with_json_path_syntax_is_422_naming_the_field(
    client: httpx.AsyncClient, generator: ScriptedGenerator, route: str, key: str
) -> None:
    r = await client.post(route, json=_body(route, {key: "x"}))
    message = _assert_422_naming(r, f"filters.{key}")
    assert "letters, digits" in message


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "value",
    [10**30, -(2**63) - 1, [1.5, 2.5], ["x", 1, True], [], [True, False], [10**20]],
    ids=["huge", "below-int64", "floats", "mixed", "empty", "bools", "huge-in-list"],
)
async def test_filter_value_the_store_cannot_match_is_422_naming_the_field(
    client: httpx.AsyncClient, generator: ScriptedGenerator, route: str, value: Any
) -> None:
    r = await client.post(route, json=_body(route, {"page": value}))
    _assert_422_naming(r, "filters.page")
    assert not generator.requests


@pytest.mark.parametrize("raw", ["NaN", "Infinity", '{"gte": NaN}', '{"lt": -Infinity}'])
async def test_filter_non_finite_number_is_422(client: httpx.AsyncClient, raw: str) -> None:
    content = '{"query": "planets", "filters": {"page": ' + raw + "}}"
    r = await client.post(
        "/v1/search", content=content, headers={"content-type": "application/json"}
    )
    _assert_422_naming(r, "filters.page")


async def test_filter_shape_error_says_what_is_accepted_once(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/search", json=_body("/v1/search", {"source": {"near": 3}}))
    message = _assert_422_naming(r, "filters.source")
    assert "filters.source.str" not in message and message.count("filters.source") == 1
    assert "a filter value is a string" in message and "a range object" in message


@pytest.mark.parametrize(
    "filters",
    [
        {"page": [1, 2]},
        {"chunk_index": 0},
        {"page": 1.0},
        {"page": {"gte": 1, "lte": 2}},
        {"doc_id": ["a", "b"], "meta.lang": "en", "_x-y": True},
    ],
)
async def test_filters_within_the_rules_still_search(
    client: httpx.AsyncClient, filters: dict[str, Any]
) -> None:
    r = await client.post("/v1/search", json=_body("/v1/search", filters))
    assert r.status_code == 200, r.text


async def test_unexpected_error_is_logged_once_and_keeps_the_connection(
    settings: Settings, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    app: FastAPI = create_app(settings, services=services)

    async def boom() -> None:
        raise RuntimeError("a bug, not bad input")

    app.add_api_route("/test-boom", boom)
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        uvicorn_log = logging.getLogger("uvicorn")  # uvicorn's own loggers do not propagate
        uvicorn_log.addHandler(caplog.handler)
        try:
            with caplog.at_level(logging.INFO):
                r = await client.get("/test-boom")
                again = await client.get("/healthz")
        finally:
            uvicorn_log.removeHandler(caplog.handler)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert "a bug" not in r.text and "Traceback" not in r.text
    assert r.headers.get("connection") != "close"
    assert again.status_code == 200
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert len(tracebacks) == 1, [rec.getMessage() for rec in tracebacks]
    assert r.headers["x-request-id"] in tracebacks[0].getMessage()


# -- finding 2: collection names --------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES[:3])
async def test_collection_name_with_trailing_newline_is_422(
    client: httpx.AsyncClient, generator: ScriptedGenerator, route: str
) -> None:
    body = {**_body(route, None), "collection": "default\n"}
    r = await client.post(route, json=body)
    assert r.status_code == 422, r.text
    assert "invalid collection name" in r.json()["error"]["message"]


async def test_upload_into_collection_name_with_trailing_newline_is_422(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/collections/default%0A/documents",
        files={"files": ("a.txt", b"some text", "text/plain")},
    )
    assert r.status_code == 422, r.text
    assert "invalid collection name" in r.json()["error"]["message"]


# -- finding 10: JSON, types, OpenAPI ---------------------------------------------------------


async def test_malformed_json_says_line_and_column(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/search",
        content='{"query": "planets",\n "k": }',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text  # unreadable, as OpenAI answers it (issue 18)
    error = r.json()["error"]
    assert error["message"] == (
        "the request body is not valid JSON: Expecting value at line 2 column 7"
    ), error
    assert error["param"] == "body"


@pytest.mark.parametrize("k", ["5", True, 5.0])
async def test_k_of_another_json_type_is_422_not_coerced(client: httpx.AsyncClient, k: Any) -> None:
    r = await client.post("/v1/search", json={"query": "planets", "k": k})
    _assert_422_naming(r, "k")


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("/v1/ask", "max_tokens", "64"),
        ("/v1/ask", "temperature", "0.5"),
        ("/v1/chat/completions", "stream", "true"),
        ("/v1/chat/completions", "n", True),
    ],
)
async def test_every_request_field_is_strict(
    client: httpx.AsyncClient, generator: ScriptedGenerator, route: str, field: str, value: Any
) -> None:
    r = await client.post(route, json={**_body(route, None), field: value})
    _assert_422_naming(r, field)


async def test_integer_temperature_is_still_a_number(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await client.post("/v1/ask", json={"question": "How hot is Venus?", "temperature": 1})
    assert r.status_code == 200, r.text
    assert generator.requests[-1].temperature == 1.0


async def test_body_that_is_not_utf8_is_400_in_the_envelope(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/search", content=b'{"query": "\xff"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text  # documented in OpenAPI (below)
    assert r.json()["error"]["message"].endswith("it is not UTF-8 text (byte 0xff at position 11)")


async def test_openapi_documents_400_and_401_where_they_occur(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/search", "/v1/ask", "/v1/ask/stream", "/v1/chat/completions"):
        responses = paths[path]["post"]["responses"]
        assert {"400", "401", "422"} <= responses.keys(), (path, responses.keys())
    upload = paths["/v1/collections/{collection}/documents"]["post"]["responses"]
    assert {"400", "401", "413", "415", "422"} <= upload.keys()
