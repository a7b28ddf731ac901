"""`rag search`, `rag ask` and `rag stats`: querying a knowledge base from the shell."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.cli import remote
from app.cli.console import check_mode, console, fail, out, run, start_command
from pipelines.access import FULL_ACCESS
from pipelines.settings import Settings
from pipelines.types import public_payload

if TYPE_CHECKING:
    from pipelines.types import Hit


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", help="How many chunks.")] = 5,
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="The collection to search.")
    ] = "default",
    mode: Annotated[str, typer.Option(help="dense, sparse or hybrid")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="While `rag serve` holds the store, the command asks it: its API key "
            "(default: RAG_SERVER__API_KEY).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show the chunks that best match a query (through `rag serve` while it runs)."""
    start_command()
    from pipelines.core import open_core

    settings = Settings()
    search_mode = check_mode(mode)

    async def main() -> list[dict[str, Any]]:
        async with open_core(settings) as core:
            hits = await core.retrieval.search(
                query, collection, access=FULL_ACCESS, k=k, mode=search_mode
            )
            return [_hit_json(h) for h in hits]

    def through(service: remote.Service) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"query": query, "collection": collection, "k": k}
        if search_mode:
            body["mode"] = search_mode
        found = service.json("POST", "/v1/search", json=body)
        return [dict(h) for h in found["hits"]]

    hits = remote.local_or_service(settings, remote.api_key(settings, api_key), main, through)
    if as_json:
        out.print_json(json.dumps(hits))
        return
    if not hits:
        out.print("no results")
    for i, h in enumerate(hits, 1):
        where = h["source"] + (f" p.{h['page']}" if h.get("page") else "")
        out.print(f"[bold]{i}.[/] {h['score']:.3f}  [cyan]{h['title']}[/]  ({where})")
        out.print("   " + " ".join(str(h["text"]).split())[:300])


def _hit_json(hit: Hit) -> dict[str, Any]:
    """A hit as `rag search --json` prints it: its payload (less the collection), score and
    chunk id."""
    payload = {k: v for k, v in public_payload(hit.payload).items() if k != "collection"}
    return {**payload, "score": hit.score, "chunk_id": hit.chunk_id}


def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="While `rag serve` holds the store, the command asks it: its API key "
            "(default: RAG_SERVER__API_KEY).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Per collection: documents, chunks, size on disk and the last ingest (UTC), from
    `rag serve` while it runs.

    The last ingest is the last write that changed the collection (an ingest, an upload, a
    deletion). A Qdrant server does not report sizes: '-' (null in JSON).
    """
    start_command()
    from app.schemas import CollectionList, CollectionOut
    from pipelines.core import open_core

    settings = Settings()

    async def main() -> list[CollectionOut]:
        async with open_core(settings) as core:
            names = await core.store.list_collections()
            return [CollectionOut.of(await core.store.stats(n, access=FULL_ACCESS)) for n in names]

    def through(service: remote.Service) -> list[CollectionOut]:
        return CollectionList.model_validate(service.json("GET", "/v1/collections")).collections

    rows = remote.local_or_service(settings, remote.api_key(settings, api_key), main, through)
    if as_json:
        typer.echo(CollectionList(collections=rows).model_dump_json(indent=2))
        return
    if not rows:
        out.print("no collections (rag ingest creates one)")
        return
    table = Table(caption="times in UTC", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("collection", overflow="fold")
    for column in ("documents", "chunks", "size"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("last ingest", no_wrap=True)
    for r in rows:
        table.add_row(
            escape(r.name),
            f"{r.documents:,}",
            f"{r.chunks:,}",
            "-" if r.size_bytes is None else _size(r.size_bytes),
            r.last_ingest_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_ingest_at else "never",
        )
    # Piped or redirected there is no terminal to fit: the table whole (as `rag keys list`).
    (out if out.is_terminal else Console(width=200)).print(table)


def _size(n: int) -> str:
    """Bytes for humans, in powers of 1024 (as `du -h`): 512 B, 1.5 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def ask(
    question: Annotated[str, typer.Argument(help="Your question.")],
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="The collection to answer from.")
    ] = "default",
    k: Annotated[int | None, typer.Option("-k", help="How many chunks to retrieve.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Answer length limit.")] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="A running ragserve (default: the `rag serve` over this data dir, else "
            "http://RAG_SERVER__HOST:RAG_SERVER__PORT)."
        ),
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

    Uses the running service when there is one (fast): the `rag serve` over this data dir
    (its `serve.json`), else one at RAG_SERVER__HOST:RAG_SERVER__PORT; with none, it loads the
    model in-process.
    """
    start_command()
    import httpx

    settings = Settings()
    body: dict[str, Any] = {"question": question, "collection": collection}
    if k:
        body["k"] = k
    if max_tokens:
        body["max_tokens"] = max_tokens
    if local:
        raise typer.Exit(run(ask_local(settings, body)))
    key = remote.api_key(settings, api_key)
    found = None if url else remote.running_service(settings, key)
    base = url or (found.url if found else f"http://{settings.server.host}:{settings.server.port}")
    try:
        code = run(ask_remote(base, body, key))
    except httpx.ConnectError:
        if url:
            raise fail(f"no ragserve at {url}") from None
        console.print(f"[dim]no service at {base}[/]")
        code = run(ask_local(settings, body))
    raise typer.Exit(code)


async def ask_remote(url: str, body: dict[str, Any], api_key: str | None = None) -> int:
    """Stream the answer from the service at `url` (`POST /v1/ask/stream`); the exit status:
    0 answered, 1 an error event mid-answer, 2 refused before the stream."""
    import httpx

    from pipelines.sse_client import aiter_sse

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
        async for event in aiter_sse(resp.aiter_lines()):
            data = json.loads(event.data)
            if event.event == "sources":
                sources = data["sources"]
            elif event.event == "token":
                _print_text(data["text"])
            elif event.event == "error":
                console.print(f"\n[bold red]error[/]: {data['error']['message']}")
                return 1
            elif event.event == "done":
                out.print()
                _print_sources(sources)
                ms = data["latency_ms"]
                console.print(
                    f"[dim]retrieval {ms['retrieval']:.0f} ms · first token "
                    f"{ms['ttft']:.0f} ms · total {ms['total']:.0f} ms[/]"
                )
    return 0


async def ask_local(settings: Settings, body: dict[str, Any]) -> int:
    """Answer in this process: the core and the configured generator, started for one answer."""
    from app.schemas import SourceOut
    from pipelines.chain import AskInput, RagChain
    from pipelines.core import open_core
    from pipelines.generators import build_generator
    from pipelines.types import ChatMessage

    console.print("[dim]starting the model in-process (about a minute on a CPU)...[/]")
    async with open_core(settings) as core:
        generator = await build_generator(settings)
        try:
            ask = AskInput(
                messages=[ChatMessage("user", body["question"])],
                collection=body["collection"],
                access=FULL_ACCESS,
                k=body.get("k"),
                max_tokens=body.get("max_tokens") or settings.llm.max_tokens,
                temperature=settings.llm.temperature,
            )
            answer = await RagChain(core.retrieval, generator).answer(ask)
            try:
                async for chunk in answer.chunks():
                    _print_text(chunk.text)
            finally:
                await answer.aclose()
        finally:
            await generator.close()
        out.print()
        _print_sources([SourceOut.of(s).model_dump() for s in answer.sources])
    return 0


def _print_text(text: str) -> None:
    out.print(text, end="", soft_wrap=True, highlight=False, markup=False)


def _print_sources(sources: Sequence[Mapping[str, Any]]) -> None:
    if not sources:
        return
    out.print("\n[bold]Sources[/]")
    for s in sources:
        where = str(s["source"]) + (f" p.{s['page']}" if s.get("page") else "")
        out.print(f"  [{s['n']}] [cyan]{s['title']}[/] ({where})")
