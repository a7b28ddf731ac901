"""The Qdrant server adapter when its server goes away and comes back: search, ask and
/readyz answer a 503 (retryable, naming the Qdrant URL) within a bounded time, never a 500,
and the same service works again, without a restart, once the server answers.

No Qdrant server binary can be installed on these machines (none ships in a package
registry we reach). What goes away here is real TCP on loopback: a port that was listening
and is closed, a listener that accepts and resets, one that accepts and never answers. What
comes back is `QdrantRestShim`, a FAKE: a thin HTTP server that answers the few REST
endpoints the adapter reads with (Qdrant's own JSON, the client's own models) from
qdrant-client's local mode. It stands only behind the port, where a real Qdrant would;
replace it with a real server where one can run."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import BaseModel
from qdrant_client import AsyncQdrantClient, models
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.main import create_app
from app.services import Services
from pipelines.core import build_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from pipelines.stores.config import StoreConfig
from pipelines.stores.server import QdrantServerStore
from tests.support.fakes import ScriptedGenerator
from tests.support.seeds import ingest_samples
from tests.support.servers import in_process_client
from tests.support.sockets import free_port

pytestmark = pytest.mark.slow

QDRANT_TIMEOUT_S = 1.0  # qdrant.timeout_s: a silent server fails a call after this
REQUEST_DEADLINE_S = 30.0  # every request of the test answers within this, or it fails

# -- the fake behind the port -----------------------------------------------------------------


def _ok(result: Any) -> JSONResponse:
    return JSONResponse({"result": result, "status": "ok", "time": 0.0})


def _dump(value: Any) -> Any:
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    return value


class QdrantRestShim:
    """FAKE Qdrant (see the module's docstring): the read endpoints of Qdrant's REST API that
    search uses, answered from `backing` (qdrant-client's local mode)."""

    def __init__(self, backing: AsyncQdrantClient) -> None:
        self.backing = backing
        self.app = Starlette(
            routes=[
                Route("/", self.root),
                Route("/collections", self.collections),
                Route("/collections/{name}/exists", self.exists),
                Route("/collections/{name}", self.collection),
                Route("/collections/{name}/index", self.index, methods=["PUT"]),
                Route("/collections/{name}/points/query", self.query, methods=["POST"]),
                Route("/collections/{name}/points", self.retrieve, methods=["POST"]),
                Route("/collections/{name}/points/count", self.count, methods=["POST"]),
            ]
        )

    async def root(self, request: Request) -> JSONResponse:
        return JSONResponse({"title": "qdrant-rest-shim (a test fake)", "version": "1.15.0"})

    async def collections(self, request: Request) -> JSONResponse:
        return _ok(_dump(await self.backing.get_collections()))

    async def exists(self, request: Request) -> JSONResponse:
        found = await self.backing.collection_exists(request.path_params["name"])
        return _ok({"exists": found})

    async def _missing(self, request: Request) -> JSONResponse | None:
        """Qdrant's 404 for a collection it does not have (local mode raises instead)."""
        name = request.path_params["name"]
        if await self.backing.collection_exists(name):
            return None
        error = f"Not found: Collection `{name}` doesn't exist!"
        return JSONResponse({"status": {"error": error}, "time": 0.0}, status_code=404)

    async def collection(self, request: Request) -> JSONResponse:
        if (missing := await self._missing(request)) is not None:
            return missing
        return _ok(_dump(await self.backing.get_collection(request.path_params["name"])))

    async def index(self, request: Request) -> JSONResponse:
        """Accepted and ignored: local mode has no payload indexes (so the adapter, finding
        none, asks for them on first use)."""
        return _ok({"operation_id": 0, "status": "completed"})

    async def query(self, request: Request) -> JSONResponse:
        if (missing := await self._missing(request)) is not None:
            return missing
        q = models.QueryRequest.model_validate(await request.json())
        response = await self.backing.query_points(
            request.path_params["name"],
            query=q.query,
            using=q.using,
            query_filter=q.filter,
            search_params=q.params,
            limit=q.limit or 10,
            with_payload=q.with_payload if q.with_payload is not None else True,
            with_vectors=q.with_vector or False,
        )
        return _ok(_dump(response))

    async def retrieve(self, request: Request) -> JSONResponse:
        r = models.PointRequest.model_validate(await request.json())
        records = await self.backing.retrieve(
            request.path_params["name"],
            r.ids,
            with_payload=r.with_payload if r.with_payload is not None else True,
            with_vectors=r.with_vector or False,
        )
        return _ok(_dump(records))

    async def count(self, request: Request) -> JSONResponse:
        c = models.CountRequest.model_validate(await request.json())
        found = await self.backing.count(
            request.path_params["name"], count_filter=c.filter, exact=bool(c.exact)
        )
        return _ok(_dump(found))


def _listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port again after a close
    sock.bind(("127.0.0.1", port))
    return sock


@asynccontextmanager
async def serving(shim: QdrantRestShim, port: int) -> AsyncIterator[None]:
    """The shim on 127.0.0.1:`port` until the block exits (then the port is closed)."""
    sock = _listening_socket(port)
    server = uvicorn.Server(uvicorn.Config(shim.app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


# -- what is on the port while Qdrant is gone --------------------------------------------------


@asynccontextmanager
async def nothing(port: int) -> AsyncIterator[None]:
    """The port was listening and is closed: connections are refused."""
    yield


@asynccontextmanager
async def resetting(port: int) -> AsyncIterator[None]:
    """A listener that accepts, reads the request's first bytes, and resets the connection."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.read(1)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()  # with SO_LINGER 0: an RST, not a FIN

    server = await asyncio.start_server(reset, "127.0.0.1", port, reuse_address=True)
    async with server:
        yield


@asynccontextmanager
async def silent(port: int) -> AsyncIterator[None]:
    """A listener that accepts and never answers (a hung node): calls end at the timeout."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", port, reuse_address=True)
    async with server:
        try:
            yield
        finally:
            for writer in held:
                writer.close()


Fault = Callable[[int], contextlib.AbstractAsyncContextManager[None]]

# -- the tests --------------------------------------------------------------------------------


@pytest.fixture
async def backing(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, make_settings: Any
) -> AsyncIterator[AsyncQdrantClient]:
    """What the fake serves: the sample documents ingested by the real job into
    qdrant-client's local mode, through the server adapter (so in the product's layout)."""
    client = AsyncQdrantClient(path=str(tmp_path / "qdrant-local"))
    settings: Settings = make_settings()
    config = StoreConfig.from_settings(
        settings.qdrant, settings.retrieval, dim=embedder.dim, embedding_model=embedder.name
    )
    # The ingest job uses the core's store, embedder and sparse encoder: the store is local.
    core = replace(build_core(settings, embedder=embedder), store=QdrantServerStore(client, config))
    await ingest_samples(core)
    try:
        yield client
    finally:
        await client.close()


async def _within(call: Awaitable[httpx.Response]) -> httpx.Response:
    return await asyncio.wait_for(call, REQUEST_DEADLINE_S)


def _assert_store_503(r: httpx.Response, url: str, what: str) -> None:
    assert r.status_code == 503, f"{what}: {r.status_code} {r.text}"
    assert r.headers.get("retry-after", "").isdigit(), f"{what}: {r.headers}"
    error = r.json()["error"]
    assert error["retryable"] is True and error["request_id"], f"{what}: {error}"
    assert error["code"] == "dependency_unavailable", f"{what}: {error}"
    assert url in error["message"], f"{what}: {error}"


async def _assert_works(c: httpx.AsyncClient) -> None:
    search = await _within(c.post("/v1/search", json={"query": "Saturn rings", "k": 3}))
    assert search.status_code == 200, search.text
    assert "water ice" in search.json()["hits"][0]["text"]
    ask = await _within(c.post("/v1/ask", json={"question": "What are Saturn's rings made of?"}))
    assert ask.status_code == 200, ask.text
    ready = await _within(c.get("/readyz"))
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text


@pytest.mark.parametrize("fault", [nothing, resetting, silent], ids=["closed", "reset", "silent"])
async def test_qdrant_server_gone_answers_503_naming_it_and_recovers_when_back(
    make_settings: Any,
    embedder: SentenceTransformerEmbedder,
    backing: AsyncQdrantClient,
    fault: Fault,
) -> None:
    port = free_port()
    qdrant_url = f"http://127.0.0.1:{port}"
    settings: Settings = make_settings(
        qdrant={"url": qdrant_url, "timeout_s": QDRANT_TIMEOUT_S},
        server={"stream_resume_s": 0},
    )
    shim = QdrantRestShim(backing)
    core = build_core(settings, embedder=embedder)
    services = Services(core=core)
    services.set_generator(ScriptedGenerator())
    try:
        async with in_process_client(create_app(settings, services=services)) as c:
            async with serving(shim, port):
                await _assert_works(c)  # up: the client holds pooled connections to it

            async with fault(port):
                search = await _within(c.post("/v1/search", json={"query": "Saturn rings"}))
                _assert_store_503(search, qdrant_url, "/v1/search")
                ask = {"question": "What are Saturn's rings made of?"}
                _assert_store_503(await _within(c.post("/v1/ask", json=ask)), qdrant_url, "ask")
                stream = await _within(c.post("/v1/ask/stream", json=ask))
                _assert_store_503(stream, qdrant_url, "/v1/ask/stream")
                ready = await _within(c.get("/readyz"))
                assert ready.status_code == 503, ready.text
                assert ready.json()["status"] == "not_ready", ready.text
                assert ready.json()["details"]["store"] == "unreachable", ready.text
                assert (await c.get("/healthz")).status_code == 200

            async with serving(shim, port):  # back on the same port: the same service works
                await _assert_works(c)
    finally:
        await core.close()


async def test_qdrant_server_back_without_its_data_is_404_then_works_once_restored(
    tmp_path: Path,
    make_settings: Any,
    embedder: SentenceTransformerEmbedder,
    backing: AsyncQdrantClient,
) -> None:
    """A server that comes back empty (no persistence) no longer has the collection the store
    had checked: a 404 naming it, not a 500; restored, the same service finds it again."""
    port = free_port()
    settings: Settings = make_settings(
        qdrant={"url": f"http://127.0.0.1:{port}", "timeout_s": QDRANT_TIMEOUT_S}
    )
    empty = AsyncQdrantClient(path=str(tmp_path / "qdrant-empty"))
    core = build_core(settings, embedder=embedder)
    services = Services(core=core)
    services.set_generator(ScriptedGenerator())
    try:
        async with in_process_client(create_app(settings, services=services)) as c:
            async with serving(QdrantRestShim(backing), port):
                await _assert_works(c)
            async with serving(QdrantRestShim(empty), port):
                search = await _within(c.post("/v1/search", json={"query": "Saturn rings"}))
                assert search.status_code == 404, search.text
                assert search.json()["error"]["code"] == "collection_not_found", search.text
                again = await _within(c.post("/v1/search", json={"query": "Saturn rings"}))
                assert again.status_code == 404, again.text  # checked again: still gone
            async with serving(QdrantRestShim(backing), port):
                await _assert_works(c)
    finally:
        await core.close()
        await empty.close()
