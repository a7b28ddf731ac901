"""The `rag` command: ingest, search, ask, stats, serve, eval, keys and collections (every
command and option has --help; `rag --version`).

Each command lives in the module named for it; `console` holds what they share, `remote` the
running service they use while it holds the store. The modules import those two and never
this package's namespace, so there is no cycle.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Annotated

import typer

from app.cli import ingest, query, serve
from app.cli.collections import collections_app
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
app.add_typer(collections_app, name="collections")


def _print_version(value: bool) -> None:
    """`--version`: the installed package's version, read from its metadata so that it is
    the one pip and the wheel say (no second copy in the code to fall behind)."""
    if value:
        typer.echo(f"ragserve {version('ragserve')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """ragserve: a self-hosted RAG question-answering service."""


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
