"""RAG_SERVER__API_KEY: the API wants a bearer key; health, metrics, page and docs stay open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from starlette.types import Message

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
    assert wrong.json()["error"]["message"] == "unknown API key"


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
        with pytest.raises(openai.AuthenticationError, match="unknown API key"):
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


async def test_malformed_json_without_a_key_is_401_not_422(keyed: httpx.AsyncClient) -> None:
    for path in ("/v1/search", "/v1/ask", "/v1/chat/completions"):
        r = await keyed.post(
            path, content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.headers["x-request-id"] == r.json()["error"]["request_id"]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
async def test_no_body_is_read_without_the_key(
    services: Services, method: str, path: str, body: dict[str, object] | None
) -> None:
    """The key is checked before the app asks for the body: `receive` is never called."""
    services.settings.server.api_key = SecretStr(KEY)
    app = create_app(services.settings, services=services)
    received: list[Message] = []
    sent: list[Message] = []

    async def receive() -> Message:
        message: Message = {"type": "http.request", "body": b"{not json", "more_body": False}
        received.append(message)
        return message

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"content-length", b"9"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    async with LifespanManager(app):
        await app(scope, receive, send)
    assert received == []
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 401
    assert (b"www-authenticate", b"Bearer") in start["headers"]


async def test_upload_without_key_is_refused_before_the_body_is_read(services: Services) -> None:
    """Over a real socket: the client sends the headers of a 64 MB upload and its first 64 kB,
    then waits. The 401 arrives while the rest is still unsent, and the server closes the
    connection rather than swallow the rest. (A server that read the body first would wait for
    it forever; the timeout only keeps that failure from hanging the suite.)"""
    services.settings.server.api_key = SecretStr(KEY)
    declared = 64 * 1024 * 1024
    async with live_server(create_app(services.settings, services=services)) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            "POST /v1/collections/default/documents HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            "Content-Type: multipart/form-data; boundary=b0undary\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        )
        first = (
            b"--b0undary\r\n"
            b'Content-Disposition: form-data; name="files"; filename="big.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n" + b"x" * 65536
        )
        writer.write(head.encode() + first)
        await writer.drain()
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
            status_line, *lines = raw.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines if line)
            headers = {k.lower(): v for k, v in headers.items()}
            body = await asyncio.wait_for(
                reader.readexactly(int(headers["content-length"])), timeout=60
            )
            rest = await asyncio.wait_for(reader.read(), timeout=60)  # EOF: closed, not drained
        finally:
            writer.close()
    assert status_line.split(" ", 2)[1] == "401", raw
    assert headers["www-authenticate"] == "Bearer"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "unauthorized" and "Authorization: Bearer" in error["message"]
    assert error["request_id"] == headers["x-request-id"]
    assert rest == b""
