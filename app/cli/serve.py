"""`rag serve`: run the query service under uvicorn."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from app.cli.console import start_command
from pipelines.settings import Settings


def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default RAG_SERVER__HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RAG_SERVER__PORT).")] = None,
) -> None:
    """Run the query service (OpenAPI docs at /docs)."""
    start_command()
    import uvicorn

    from app.main import create_app

    settings = Settings()
    logging.getLogger().setLevel(logging.INFO)
    uvicorn.run(
        create_app(settings),
        host=host or settings.server.host,
        port=port or settings.server.port,
        log_level="info",
    )
