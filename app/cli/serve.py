"""`rag serve`: run the query service under uvicorn, recording where it serves in the data dir
(`serve.json`, app/cli/remote.py) for the other commands to find it."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli import remote
from app.cli.console import fail, start_command
from pipelines.errors import RagError
from pipelines.settings import Settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import socket

    import uvicorn


def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default RAG_SERVER__HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RAG_SERVER__PORT).")] = None,
) -> None:
    """Run the query service (OpenAPI docs at /docs)."""
    start_command(serving=True)
    import uvicorn

    from app.main import create_app
    from app.principal import exposure_problem
    from app.services import build_services
    from pipelines.keys import KeyStore

    settings = Settings()
    bind = host or settings.server.host
    # Only a start that would be open off loopback needs to ask the key database (the
    # services open it anyway): the usual start opens it once.
    if exposure_problem(settings, bind, has_keys=False) is not None:
        try:
            keys = KeyStore.open(settings.database_url)
            try:
                has_keys = keys.has_keys()
            finally:
                keys.close()
        except RagError as exc:
            raise fail(exc.message) from exc
        problem = exposure_problem(settings, bind, has_keys)
        if problem is not None:
            raise fail(problem)
    config = uvicorn.Config(
        "app.main:create_app",  # replaced in main() by the app over the services built there
        host=bind,
        port=port or settings.server.port,
        # uvicorn's loggers get no handlers of their own: they reach the root handler
        # (`start_command`), in RAG_LOG__FORMAT. Its access log is off: `app/auth.py` writes
        # the one line per request, with the route, key, tokens and cost.
        log_config=None,
        log_level=settings.log.level,
        access_log=False,
    )

    async def main() -> None:
        # The services are built before uvicorn starts, not in its lifespan: a store that
        # cannot open (a read-only or full data dir, another process holding it) ends the
        # command with one line and status 2, not a lifespan traceback and status 3.
        async with AsyncExitStack() as stack:
            services = await build_services(settings, stack)
            config.app = create_app(settings, services=services)
            try:
                await recording_server(config, settings.data_dir).serve()
            finally:
                remote.forget_service(settings.data_dir)

    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # uvloop if there
            runner.run(main())
    except RagError as exc:
        raise fail(exc.message) from exc


def recording_server(config: uvicorn.Config, data_dir: Path) -> uvicorn.Server:
    """uvicorn's server that records its URL in `data_dir` (`remote.record_service`) once its
    socket is bound and it accepts connections, so that a command finding the record finds
    it answering."""
    import uvicorn

    class RecordingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            url = remote.service_url(self.config.host, self.servers[0].sockets[0].getsockname()[1])
            try:
                remote.record_service(data_dir, url)
            except OSError as exc:  # serving matters more than being found
                log.warning(
                    "serving, but not recorded in %s (%s): `rag search`, `rag stats` "
                    "and `rag ingest` will not find this service",
                    data_dir,
                    exc,
                )

    return RecordingServer(config)
