"""Issue 14, findings 6 and 8: readiness reflects the generator's health probe; on the OpenAI
route the model alone decides the collection."""

from __future__ import annotations

import httpx

from app.services import Services
from pipelines.generators.openai_server import OpenAIServerGenerator
from pipelines.settings import LLMSettings
from tests.support.fakes import ScriptedGenerator
from tests.support.sockets import free_port

QUESTION = [{"role": "user", "content": "How hot is Venus?"}]


async def test_readyz_reports_an_unreachable_generator_with_its_reason(
    client: httpx.AsyncClient, services: Services
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    generator = OpenAIServerGenerator(LLMSettings(base_url=nobody, model="m", retries=0))
    services.set_generator(generator)
    try:
        r = await client.get("/readyz")
    finally:
        await generator.close()
    # Search still works, so the service stays in rotation, degraded.
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    assert body["details"]["search"] == "ready"
    assert body["details"]["generator"] == "unreachable"
    assert body["details"]["generator_error"]


async def test_readyz_says_ready_when_the_generator_answers_its_probe(
    client: httpx.AsyncClient, services: Services
) -> None:
    services.set_generator(ScriptedGenerator())
    body = (await client.get("/readyz")).json()
    assert body["status"] == "ready"
    assert body["details"]["generator"] == "ready"
    assert "generator_error" not in body["details"]


async def test_openapi_documents_readiness_states(client: httpx.AsyncClient) -> None:
    op = (await client.get("/openapi.json")).json()["paths"]["/readyz"]["get"]
    assert "degraded" in op["description"] and "unreachable" in op["description"]


async def test_chat_collection_conflicting_with_model_is_400(
    client: httpx.AsyncClient, services: Services
) -> None:
    gen = ScriptedGenerator()
    services.set_generator(gen)
    await services.store.ensure_collection("secretb", create=True)
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "rag:default", "messages": QUESTION, "collection": "secretb"},
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert "secretb" in error["message"] and "rag:default" in error["message"]
    assert gen.requests == []


async def test_chat_collection_equal_to_the_models_passes(
    client: httpx.AsyncClient, services: Services
) -> None:
    services.set_generator(ScriptedGenerator())
    for model in ("rag:default", "ragserve"):
        r = await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": QUESTION, "collection": "default"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["model"] == model


async def test_chat_completions_documents_400(client: httpx.AsyncClient) -> None:
    op = (await client.get("/openapi.json")).json()["paths"]["/v1/chat/completions"]["post"]
    assert "collection" in op["responses"]["400"]["description"]
