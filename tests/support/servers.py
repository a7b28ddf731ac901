"""The app under test as a client reaches it: in-process through ASGI, or served by uvicorn on
loopback, in the test's event loop or on a thread of its own (like `rag serve`)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import openai
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.main import create_app
from app.routes import ui
from app.services import Services, open_keys
from pipelines.core import build_core
from pipelines.ports import Embedder, Generator
from pipelines.settings import Settings
from tests.support.seeds import ingest_samples
from tests.support.sockets import loopback_socket, url_of

START_TIMEOUT_S = 120.0


@asynccontextmanager
async def in_process_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` in-process: its lifespan runs, requests go through ASGI."""
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        yield c


def sdk_over(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    """The official openai SDK talking to the app through `http` (an in-process client), no
    retries: what a test sees is the first answer. This openai build is typed against its
    httpx fork; an httpx client with the in-process ASGI transport works in its place."""
    return openai.AsyncOpenAI(
        base_url=str(http.base_url.join("/v1")),
        api_key="x",
        http_client=http,  # type: ignore[arg-type]
        max_retries=0,
    )


@asynccontextmanager
async def live_server(app: FastAPI) -> AsyncIterator[str]:
    """Yield the base URL of `app` served by uvicorn on 127.0.0.1 until the block exits."""
    sock = loopback_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start within 10 s")
        await asyncio.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


class ThreadedLiveServer:
    """The app over the sample documents in a uvicorn server on its own thread and event loop,
    like `rag serve`, answering with `generator`."""

    def __init__(self, settings: Settings, embedder: Embedder, generator: Generator) -> None:
        self.settings = settings
        self.embedder = embedder
        self.generator = generator
        self.sock = loopback_socket()
        self.url = url_of(self.sock)
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, name="live-uvicorn", daemon=True)
        self._stack = AsyncExitStack()

    def run(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # reported to the test thread by start()
            self.error = exc

    async def serve(self) -> None:
        core = build_core(self.settings, embedder=self.embedder)
        try:
            await ingest_samples(core)
            keys, quotas = await open_keys(self.settings, self._stack)
            services = Services(core=core, keys=keys, quotas=quotas)
            services.set_generator(self.generator)
            app = create_app(self.settings, services=services)
            if not any(getattr(r, "path", None) == "/" for r in app.routes):
                app.include_router(ui.router)  # until app.main includes the page itself
            config = uvicorn.Config(
                app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3
            )
            self.server = uvicorn.Server(config)
            await self.server.serve(sockets=[self.sock])
        finally:
            await self._stack.aclose()
            await core.close()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self.server is not None and self.server.started):
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"the live server failed to start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the live server did not start in {START_TIMEOUT_S}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
