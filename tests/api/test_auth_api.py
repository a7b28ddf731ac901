"""RAG_SERVER__API_KEY: the API wants a bearer key; health, metrics, page and docs stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from pydantic import SecretStr

from app.main import create_app
from app.services import Services
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import in_process_client, live_server

KEY = "s3cret-key"

PROTECTED = [
    ("POST", "/v1/search", {"query": "coffee"}),
    ("POST", "/v1/ask", {"question": "coffee?"}),
    ("POST", "/v1/ask/stream", {"question": "coffee?"}),
    ("POST", "/v1/chat/completions", {"model": "ragserve", "messages": []}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/collections", None),
    ("GET", "/v1/collections/default/documents", None),
    ("POST", "/v1/collections/default/documents", None),
    ("DELETE", "/v1/collections/default/documents/abc", None),
]


@pytest.fixture
async def keyed(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    services.settings.server.api_key = SecretStr(KEY)
    services.set_generator(ScriptedGenerator())
    async with in_process_client(create_app(services.settings, services=services)) as c:
        yield c


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
async def test_every_api_endpoint_wants_the_key(
    keyed: httpx.AsyncClient, method: str, path: str, body: dict[str, object] | None
) -> None:
    r = await keyed.request(method, path, json=body)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    error = r.json()["error"]
    assert error["code"] == "unauthorized"
    assert "Authorization: Bearer" in error["message"]
    wrong = await keyed.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "invalid API key"


async def test_the_right_key_is_let_in(keyed: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    r = await keyed.post("/v1/search", json={"query": "grams of coffee per litre"}, headers=auth)
    assert r.status_code == 200, r.text
    assert "60 grams" in r.json()["hits"][0]["text"]
    basic = await keyed.get("/v1/collections", headers={"Authorization": f"Basic {KEY}"})
    assert basic.status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/", "/openapi.json", "/docs"])
async def test_health_metrics_page_and_docs_stay_open(keyed: httpx.AsyncClient, path: str) -> None:
    assert (await keyed.get(path)).status_code == 200


async def test_openapi_declares_the_bearer_scheme(keyed: httpx.AsyncClient) -> None:
    spec = (await keyed.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/search"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


async def test_openai_sdk_sends_its_api_key(services: Services) -> None:
    services.settings.server.api_key = SecretStr(KEY)
    services.set_generator(ScriptedGenerator())
    async with live_server(create_app(services.settings, services=services)) as url:
        good = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY)
        resp = await good.chat.completions.create(
            model="rag:default", messages=[{"role": "user", "content": "How hot is Venus?"}]
        )
        assert resp.choices[0].message.content == "Venus is hot [1]."
        bad = openai.AsyncOpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="invalid API key"):
            await bad.models.list()


async def test_rag_ask_sends_the_key(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli.query import ask_remote

    services.settings.server.api_key = SecretStr(KEY)
    services.set_generator(ScriptedGenerator())
    body = {"question": "How hot is Venus?", "collection": "default"}
    async with live_server(create_app(services.settings, services=services)) as url:
        assert await ask_remote(url, body, KEY) == 0
        printed = capsys.readouterr().out
        assert "Venus is hot [1]." in printed
        assert "[1]" in printed and "solar-system" in printed  # the numbered source
        assert await ask_remote(url, body, None) == 2
    assert "missing API key" in capsys.readouterr().err
