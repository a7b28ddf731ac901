"""`rag ingest`: files and folders into a collection, with progress and a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.console import IngestBar, console, fail, out, progress_bar, run, start_command
from pipelines.access import parse_groups
from pipelines.errors import InvalidInput
from pipelines.settings import Settings

if TYPE_CHECKING:
    from ingest.pipeline import IngestSummary


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (recursive).")],
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="Target collection.")
    ] = "default",
    prune: Annotated[bool, typer.Option(help="Delete documents whose files are gone.")] = False,
    groups: Annotated[
        str,
        typer.Option(
            help="Comma-separated groups that may read these documents, e.g. 'hr,finance' "
            "(default: public; a .jsonl line's own 'groups' wins)."
        ),
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Ingest .txt .md .html .pdf .docx and .jsonl corpora; re-runs only embed what changed.

    Exit status: 0 all ingested, 1 some files failed (the rest landed), 2 error.
    """
    start_command(verbose)
    from ingest.job import open_pipeline

    try:
        access_list = parse_groups(groups)
    except InvalidInput as exc:
        raise fail(f"--groups: {exc.message}") from exc
    settings = Settings()

    async def main() -> IngestSummary:
        async with open_pipeline(settings) as pipeline:
            with progress_bar(as_json, width=44) as bar:
                return await pipeline.run(
                    paths, collection, prune=prune, progress=IngestBar(bar), groups=access_list
                )

    summary = run(main())
    if as_json:
        out.print_json(json.dumps(summary.to_dict()))
    else:
        console.print(
            f"[bold]{collection}[/]: {summary.added} added, {summary.updated} updated, "
            f"{summary.unchanged} unchanged, {summary.deleted} deleted, "
            f"{len(summary.failed)} failed; {summary.chunks} chunks in {summary.seconds:.1f}s"
        )
        for f in summary.failed:
            console.print(f"  [red]failed[/] {f['source']}: {f['reason']}")
    if summary.failed:
        raise typer.Exit(code=1)
