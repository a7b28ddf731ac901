"""One documented error schema (issue 18): OpenAPI documents the envelope every error
response has (no FastAPI `HTTPValidationError` left), a body that is not JSON says why and
where in words, a validation error's `param` is the dotted field path as the client wrote it,
and a refused field is the `param` of the 400, as OpenAI's SDK exposes it (`err.param`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from app.main import create_app
from app.services import Services
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import in_process_client, sdk_over

QUESTION = [{"role": "user", "content": "How hot is Venus?"}]
ENVELOPE = "#/components/schemas/ErrorEnvelope"


@pytest.fixture
def generator(services: Services) -> ScriptedGenerator:
    gen = ScriptedGenerator()
    services.set_generator(gen)
    return gen


async def post_raw(client: httpx.AsyncClient, route: str, content: bytes) -> httpx.Response:
    return await client.post(route, content=content, headers={"content-type": "application/json"})


# -- OpenAPI ----------------------------------------------------------------------------------


async def test_openapi_has_no_validation_error_schema_of_fastapi(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert "HTTPValidationError" not in json.dumps(spec)


async def test_openapi_documents_the_envelope_for_every_error_of_every_route(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "422"} <= responses.keys(), (method, path)
            for status, response in responses.items():
                if int(status) < 400 or (path, status) == ("/readyz", "503"):
                    continue  # /readyz's 503 is its Health body, documented as such
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ENVELOPE}, (method, path, status)


async def test_openapi_error_body_has_openais_fields(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    body = spec["components"]["schemas"]["ErrorBody"]
    assert {"message", "type", "param", "code"} <= body["properties"].keys()


# -- a body that cannot be read ---------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/ask", "/v1/search"])
async def test_invalid_json_is_400_saying_why_and_where(
    client: httpx.AsyncClient, generator: ScriptedGenerator, route: str
) -> None:
    r = await post_raw(client, route, b'{"model": "m" "messages": []}')
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"] == (
        "the request body is not valid JSON: Expecting ',' delimiter at line 1 column 15"
    )
    assert error["param"] == "body" and error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_request"
    assert generator.requests == []


async def test_invalid_json_on_a_later_line_names_that_line(client: httpx.AsyncClient) -> None:
    r = await post_raw(client, "/v1/chat/completions", b'{"model": "m",\n "messages": ]}')
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].endswith("Expecting value at line 2 column 14")


async def test_body_that_is_not_utf8_says_so(client: httpx.AsyncClient) -> None:
    r = await post_raw(client, "/v1/chat/completions", b'{"model": "\xff"}')
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"] == (
        "the request body is not valid JSON: it is not UTF-8 text (byte 0xff at position 11)"
    )
    assert error["param"] == "body"


async def test_sdk_raises_bad_request_for_invalid_json_with_its_message(
    client: httpx.AsyncClient,
) -> None:
    """What the openai SDK makes of the 400 (its `extra_body` cannot send broken JSON, so
    the raw request goes through the SDK's own client and error mapping)."""
    sdk = sdk_over(client)
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.post(
            "/chat/completions",
            cast_to=httpx.Response,
            content=b"{",
            options={"headers": {"content-type": "application/json"}},
        )
    assert caught.value.param == "body"
    assert "not valid JSON" in caught.value.message


# -- validation errors: the field as the client wrote it ----------------------------------------


def with_message(**fields: Any) -> dict[str, Any]:
    return {"model": "rag:default", "messages": QUESTION, **fields}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"model": "rag:default", "messages": [{"role": "user", "content": 5}]},
            "messages.0.content",
        ),
        (
            {
                "model": "rag:default",
                "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}],
            },
            "messages.0.content.0.text",
        ),
        ({"model": "rag:default", "messages": [{"content": "x"}]}, "messages.0.role"),
        (with_message(stop=5), "stop"),
        (with_message(stop=["a", 5]), "stop.1"),
        (with_message(stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
        (with_message(max_tokens=0), "max_tokens"),
        ({"messages": QUESTION}, "model"),
    ],
)
async def test_validation_error_param_is_the_dotted_field_path(
    client: httpx.AsyncClient, generator: ScriptedGenerator, body: dict[str, Any], param: str
) -> None:
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    assert error["message"].startswith(f"{param}: "), error
    assert [d["field"] for d in error["details"]] == [param]
    for noise in ("body.", "constrained-str", ".str", "list["):
        assert noise not in error["message"], error
    assert generator.requests == []


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/v1/ask", {"question": 5}, "question"),
        ("/v1/ask", {"question": "x", "messages": [{"role": "user"}]}, "messages.0.content"),
        ("/v1/search", {"query": "planets", "k": "5"}, "k"),
    ],
)
async def test_our_routes_name_the_field_the_same_way(
    client: httpx.AsyncClient, route: str, body: dict[str, Any], param: str
) -> None:
    r = await client.post(route, json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"


async def test_a_query_parameter_is_named_without_its_place(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/collections/default/documents", params={"limit": "many"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "limit"


# -- 400s name the field: through the openai SDK --------------------------------------------


@pytest.fixture
async def sdk(
    settings: Settings, services: Services, generator: ScriptedGenerator
) -> AsyncIterator[openai.AsyncOpenAI]:
    async with in_process_client(create_app(settings, services=services)) as http:
        yield sdk_over(http)


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [TOOL]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"n": 2}, "n"),
        ({"extra_body": {"collection": "other"}}, "collection"),
    ],
)
async def test_sdk_bad_request_names_the_refused_field(
    sdk: openai.AsyncOpenAI,
    generator: ScriptedGenerator,
    fields: dict[str, Any],
    param: str,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model="rag:default",
            messages=[{"role": "user", "content": "How hot is Venus?"}],
            **fields,
        )
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.code == "invalid_request"
    assert generator.requests == []


async def test_sdk_validation_error_names_the_field(
    sdk: openai.AsyncOpenAI, generator: ScriptedGenerator
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await sdk.chat.completions.create(
            model="rag:default",
            messages=[{"role": "user", "content": "How hot is Venus?"}],
            extra_body={"top_p": 7},
        )
    assert caught.value.param == "top_p"


async def test_unknown_model_names_the_model_field(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.chat.completions.create(
            model="rag:nope", messages=[{"role": "user", "content": "How hot is Venus?"}]
        )
    assert caught.value.param == "model"
