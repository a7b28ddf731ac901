"""`rag collections delete`: drop a collection and everything in it, after a confirmation.

The embedded store serves one process at a time: while `rag serve` holds the collection, the
command refuses (exit 2) and says to delete it through the service (DELETE
/v1/collections/{collection}), instead of removing files under a running engine.
"""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.console import console, fail, run, start_command
from pipelines.access import FULL_ACCESS
from pipelines.errors import CollectionNotFound, StoreLocked
from pipelines.settings import Settings

collections_app = typer.Typer(
    help="Manage collections (`rag stats` lists them; `rag ingest` creates one).",
    no_args_is_help=True,
    add_completion=False,
)


@collections_app.command()
def delete(
    collection: Annotated[str, typer.Argument(help="The collection to delete.")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete without asking for confirmation.")
    ] = False,
) -> None:
    """Delete a collection and every document in it; this cannot be undone.

    Exit status: 0 deleted, 1 not confirmed, 2 error (no such collection, or the store is
    held by a running service).
    """
    start_command()
    from ingest.originals import Originals
    from pipelines.core import open_core
    from pipelines.stores.schema import check_collection_name

    settings = Settings()

    async def main() -> bool:
        check_collection_name(collection)
        async with open_core(settings) as core:
            if collection not in await core.store.list_collections():
                raise CollectionNotFound(collection)
            # Opening it takes the embedded engine's lock: a running service holding it
            # refuses here (StoreLocked), before anything is asked or removed.
            try:
                await core.store.ensure_collection(collection, create=False)
            except StoreLocked:
                raise held_by_service(collection, settings) from None
            stats = await core.store.stats(collection, access=FULL_ACCESS)
            # A prompt in the loop is fine here: this command has nothing else running.
            if not yes and not typer.confirm(
                f"Delete collection '{collection}' ({stats.documents} documents, "
                f"{stats.chunks} chunks)? This cannot be undone",
                default=False,
                err=True,
            ):
                return False
            await core.store.drop_collection(collection)
            Originals.of(settings).remove_collection(collection)  # its kept files with it
            return True

    try:
        deleted = run(main())
    except typer.Abort:  # end of input at the prompt: not confirmed
        deleted = False
    if not deleted:
        console.print("not deleted")
        raise typer.Exit(1)
    console.print(f"deleted collection [bold]{collection}[/]")


def held_by_service(collection: str, settings: Settings) -> typer.Exit:
    """The one clear refusal while a running service holds the embedded store (exit 2): the
    way that works instead, through the service."""
    url = f"http://{settings.server.host}:{settings.server.port}"
    return fail(
        f"collection '{collection}' is held by a running service (rag serve): delete it "
        f"through the service (DELETE {url}/v1/collections/{collection} with an admin key), "
        "or stop the service first"
    )
