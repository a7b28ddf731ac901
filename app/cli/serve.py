"""`rag serve`: run the query service under uvicorn."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Annotated

import typer

from app.cli.console import fail, start_command
from pipelines.errors import RagError
from pipelines.settings import Settings


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
            await uvicorn.Server(config).serve()

    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # uvloop if there
            runner.run(main())
    except RagError as exc:
        raise fail(exc.message) from exc
