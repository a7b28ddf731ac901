"""The `rag` command: ingest, search, stats, serve (every command has --help)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from app.progress import RateColumn
from pipelines.errors import RagError
from pipelines.settings import Settings

app = typer.Typer(
    help="ragserve: a self-hosted RAG question-answering service.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _fail(exc: RagError) -> typer.Exit:
    console.print(f"[bold red]error[/]: {exc.message}")
    return typer.Exit(code=2)


class _RichProgress:
    def __init__(self, progress: Progress) -> None:
        self._p = progress
        self._files = progress.add_task("files", total=None)
        self._chunks = progress.add_task("chunks", total=None)

    def files_total(self, n: int) -> None:
        self._p.update(self._files, total=n)

    def file_done(self, source: str) -> None:
        self._p.update(self._files, advance=1, description=f"files  {Path(source).name[:30]}")

    def chunks_done(self, n: int) -> None:
        self._p.update(self._chunks, advance=n)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (recursive).")],
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="Target collection.")
    ] = "default",
    prune: Annotated[bool, typer.Option(help="Delete documents whose files are gone.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Ingest .txt .md .html .pdf .docx and .jsonl corpora; re-runs only embed what changed.

    Exit status: 0 all ingested, 1 some files failed (the rest landed), 2 error.
    """
    _setup_logging(verbose)
    from ingest.job import open_pipeline

    settings = Settings()

    async def run() -> Any:
        async with open_pipeline(settings) as pipeline:
            with Progress(
                TextColumn("{task.description:<44}"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=as_json,
                disable=not console.is_terminal and as_json,
            ) as bar:
                return await pipeline.run(
                    paths, collection, prune=prune, progress=_RichProgress(bar)
                )

    try:
        summary = asyncio.run(run())
    except RagError as exc:
        raise _fail(exc) from exc
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


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", help="How many chunks.")] = 5,
    collection: Annotated[str, typer.Option("--collection", "-c")] = "default",
    mode: Annotated[str, typer.Option(help="dense, sparse or hybrid")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the chunks that best match a query."""
    _setup_logging(False)
    from pipelines.embedder import build_embedder
    from pipelines.retrieval import build_retrieval
    from pipelines.stores import build_store

    settings = Settings()
    if mode and mode not in ("dense", "sparse", "hybrid"):
        console.print("[red]error[/]: --mode must be dense, sparse or hybrid")
        raise typer.Exit(2)

    async def run() -> list[dict[str, Any]]:
        embedder = build_embedder(settings)
        store = build_store(settings, dim=embedder.dim, embedding_model=embedder.name)
        try:
            service = build_retrieval(settings, store, embedder)
            hits = await service.search(query, collection, k=k, mode=mode or None)  # type: ignore[arg-type]
            return [h.to_dict() for h in hits]
        finally:
            await store.close()

    try:
        hits = asyncio.run(run())
    except RagError as exc:
        raise _fail(exc) from exc
    if as_json:
        out.print_json(json.dumps(hits))
        return
    if not hits:
        out.print("no results")
    for i, h in enumerate(hits, 1):
        where = h["source"] + (f" p.{h['page']}" if h.get("page") else "")
        out.print(f"[bold]{i}.[/] {h['score']:.3f}  [cyan]{h['title']}[/]  ({where})")
        out.print("   " + " ".join(str(h["text"]).split())[:300])


def _print_sources(sources: list[dict[str, Any]]) -> None:
    if not sources:
        return
    out.print("\n[bold]Sources[/]")
    for s in sources:
        where = str(s["source"]) + (f" p.{s['page']}" if s.get("page") else "")
        out.print(f"  [{s['n']}] [cyan]{s['title']}[/] ({where})")


async def _ask_remote(url: str, body: dict[str, Any], api_key: str | None = None) -> int:
    import httpx

    timeout = httpx.Timeout(300, connect=3)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with (
        httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers) as client,
        client.stream("POST", "/v1/ask/stream", json=body) as resp,
    ):
        if resp.status_code != 200:
            err = json.loads(await resp.aread()).get("error", {})
            console.print(f"[bold red]error[/] ({resp.status_code}): {err.get('message')}")
            return 2
        sources: list[dict[str, Any]] = []
        event = ""
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:].strip())
                if event == "sources":
                    sources = data["sources"]
                elif event == "token":
                    out.print(data["text"], end="", soft_wrap=True, highlight=False, markup=False)
                elif event == "error":
                    console.print(f"\n[bold red]error[/]: {data['error']['message']}")
                    return 1
                elif event == "done":
                    out.print()
                    _print_sources(sources)
                    ms = data["latency_ms"]
                    console.print(
                        f"[dim]retrieval {ms['retrieval']:.0f} ms · first token "
                        f"{ms['ttft']:.0f} ms · total {ms['total']:.0f} ms[/]"
                    )
    return 0


async def _ask_local(settings: Settings, body: dict[str, Any]) -> int:
    from contextlib import AsyncExitStack

    from app.services import build_services
    from pipelines.answer import start_answer
    from pipelines.chain import AskInput
    from pipelines.generators import build_generator
    from pipelines.types import ChatMessage

    console.print("[dim]starting the model in-process (about a minute on a CPU)...[/]")
    async with AsyncExitStack() as stack:
        services = await build_services(settings, stack, start_generator=False)
        generator = await build_generator(settings)
        stack.push_async_callback(generator.close)
        services.set_generator(generator)
        ask = AskInput(
            messages=[ChatMessage("user", body["question"])],
            collection=body["collection"],
            k=body.get("k"),
            max_tokens=body.get("max_tokens") or settings.llm.max_tokens,
            temperature=settings.llm.temperature,
        )
        answer = await start_answer(services.require_chain(), ask)
        try:
            async for chunk in answer.chunks():
                out.print(chunk.text, end="", soft_wrap=True, highlight=False, markup=False)
        finally:
            await answer.aclose()
        out.print()
        _print_sources(answer.sources())
    return 0


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="Your question.")],
    collection: Annotated[str, typer.Option("--collection", "-c")] = "default",
    k: Annotated[int | None, typer.Option("-k", help="How many chunks to retrieve.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Answer length limit.")] = None,
    url: Annotated[
        str | None,
        typer.Option(help="A running ragserve (default http://RAG_SERVER__HOST:RAG_SERVER__PORT)."),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Do not use a server: load the model in this process.")
    ] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="The service's API key (default: RAG_SERVER__API_KEY).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Ask a question: the answer streams in, then its numbered sources.

    Uses the running service when there is one (fast), else loads the model in-process.
    """
    _setup_logging(False)
    import httpx

    settings = Settings()
    body: dict[str, Any] = {"question": question, "collection": collection}
    if k:
        body["k"] = k
    if max_tokens:
        body["max_tokens"] = max_tokens
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    try:
        if local:
            code = asyncio.run(_ask_local(settings, body))
        else:
            try:
                key = api_key or (
                    settings.server.api_key.get_secret_value() if settings.server.api_key else None
                )
                code = asyncio.run(_ask_remote(base, body, key))
            except httpx.ConnectError:
                if url:
                    console.print(f"[bold red]error[/]: no ragserve at {url}")
                    raise typer.Exit(2) from None
                console.print(f"[dim]no service at {base}[/]")
                code = asyncio.run(_ask_local(settings, body))
    except RagError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Documents and chunks per collection."""
    _setup_logging(False)
    from pipelines.embedder import build_embedder
    from pipelines.stores import build_store

    settings = Settings()

    async def run() -> list[dict[str, Any]]:
        embedder = build_embedder(settings)
        store = build_store(settings, dim=embedder.dim, embedding_model=embedder.name)
        try:
            rows = []
            for name in await store.list_collections():
                s = await store.stats(name)
                rows.append({"name": s.name, "documents": s.documents, "chunks": s.chunks})
            return rows
        finally:
            await store.close()

    try:
        rows = asyncio.run(run())
    except RagError as exc:
        raise _fail(exc) from exc
    if as_json:
        out.print_json(json.dumps({"collections": rows}))
        return
    table = Table("collection", "documents", "chunks")
    for r in rows:
        table.add_row(r["name"], str(r["documents"]), str(r["chunks"]))
    out.print(table)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default RAG_SERVER__HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RAG_SERVER__PORT).")] = None,
) -> None:
    """Run the query service (OpenAPI docs at /docs)."""
    _setup_logging(False)
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


from app.evaluate import eval_app  # noqa: E402  (its commands import this module lazily)

app.add_typer(eval_app, name="eval")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
