"""The `rag` command: ingest, search, ask, stats, serve, eval and keys (every command has --help).

Each command lives in the module named for it; `console` holds what they share. The
modules import `console` and never this package's namespace, so there is no cycle.
"""

from __future__ import annotations

import sys

import typer

from app.cli import ingest, query, serve
from app.cli.eval import eval_app
from app.cli.keys import keys_app

app = typer.Typer(
    help="ragserve: a self-hosted RAG question-answering service.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(ingest.ingest)
app.command()(query.search)
app.command()(query.ask)
app.command()(query.stats)
app.command()(serve.serve)
app.add_typer(eval_app, name="eval")
app.add_typer(keys_app, name="keys")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
