"""`rag eval`: retrieval quality on BEIR datasets and end-to-end QA on SQuAD files."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.progress import RateColumn
from pipelines.errors import RagError
from pipelines.evaluation import AnswerFn
from pipelines.retrieval import RetrievalService, build_retrieval
from pipelines.settings import Settings
from pipelines.types import Hit, SearchMode

eval_app = typer.Typer(
    help="Evaluate retrieval (BEIR datasets) and answers (SQuAD files) on a throw-away index.",
    no_args_is_help=True,
)
console = Console(stderr=True)
out = Console()
MODES = ("dense", "sparse", "hybrid")
BEIR_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


class _IngestBar:
    """The ingest job's progress on a rich bar: chunks embedded and stored."""

    def __init__(self, progress: Progress) -> None:
        self._p = progress
        self._task: TaskID = progress.add_task("ingest (chunks)", total=None)

    def files_total(self, n: int) -> None: ...

    def file_done(self, source: str) -> None: ...

    def chunks_done(self, n: int) -> None:
        self._p.update(self._task, advance=n)


def _advance(bar: Progress, task: TaskID) -> Callable[[int], None]:
    def advance(n: int) -> None:
        bar.update(task, advance=n)

    return advance


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=quiet,
        disable=quiet and not console.is_terminal,
    )


@dataclass(slots=True)
class EvalIndex:
    """A corpus ingested through the product's ingest job into a collection of its own."""

    service: RetrievalService
    collection: str
    documents: int
    chunks: int
    ingest_s: float


@asynccontextmanager
async def throwaway_index(
    settings: Settings,
    corpus_file: Path,
    *,
    chunking: bool,
    progress: Progress,
) -> AsyncIterator[EvalIndex]:
    """Ingest `corpus_file` (jsonl) with the product's pipeline, embedder and sparse encoder;
    everything is deleted on exit (a temp Qdrant Edge dir, or a uniquely named collection on
    a configured Qdrant server)."""
    from ingest.chunking import Chunker
    from ingest.job import build_chunker
    from ingest.pipeline import IngestPipeline
    from pipelines.embedder import build_embedder
    from pipelines.sparse import QdrantBm25Encoder
    from pipelines.stores import build_store

    async with AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-eval-")))
        embedder = build_embedder(settings)
        if settings.qdrant.url:
            store_settings = settings
            collection = f"eval-{uuid.uuid4().hex[:12]}"
        else:
            store_settings = settings.model_copy(update={"data_dir": tmp})
            collection = "eval"
        store = build_store(store_settings, dim=embedder.dim, embedding_model=embedder.name)
        stack.push_async_callback(store.close)
        stack.push_async_callback(store.drop_collection, collection)
        # Without chunking each document is one point, truncated by the embedder as the
        # model's own benchmarks do (BM25 still sees the whole text).
        chunker = (
            build_chunker(settings, embedder)
            if chunking
            else Chunker(embedder.count_tokens, 1 << 30, 0)
        )
        sparse = QdrantBm25Encoder.from_settings(settings.retrieval)
        pipeline = IngestPipeline(
            store,
            embedder,
            sparse,
            chunker,
            batch_size=max(settings.embedding.batch_size * 4, 64),
        )
        started = time.perf_counter()
        summary = await pipeline.run([corpus_file], collection, progress=_IngestBar(progress))
        if summary.failed:
            first = summary.failed[0]
            console.print(
                f"[yellow]warning[/]: {len(summary.failed)} corpus lines failed to load "
                f"(first: {first['source']}: {first['reason']})"
            )
        service = build_retrieval(settings, store, embedder, sparse)
        yield EvalIndex(
            service=service,
            collection=collection,
            documents=summary.added + summary.updated + summary.unchanged,
            chunks=summary.chunks,
            ingest_s=round(time.perf_counter() - started, 2),
        )


def _check_mode(mode: str | None) -> SearchMode | None:
    if mode is not None and mode not in MODES:
        console.print(f"[bold red]error[/]: --mode must be one of {', '.join(MODES)}")
        raise typer.Exit(2)
    return mode  # type: ignore[return-value]


def _config(settings: Settings, mode: str) -> dict[str, Any]:
    r = settings.retrieval
    config: dict[str, Any] = {"mode": mode, "embedding_model": settings.embedding.model}
    if mode == "hybrid":
        config.update(
            fusion=r.fusion, dense_weight=r.dense_weight, prefetch=r.prefetch, rrf_k=r.rrf_k
        )
    if mode in ("sparse", "hybrid"):
        config.update(bm25_k1=r.bm25_k1, bm25_b=r.bm25_b, bm25_avg_len=r.bm25_avg_len)
    config.update(dedupe=r.dedupe, mmr_diversity=r.mmr_diversity, rerank_model=r.rerank_model)
    return config


def _emit(
    result: dict[str, Any], metrics: tuple[str, ...], title: str, as_json: bool, path: Path | None
) -> None:
    text = json.dumps(result, indent=2)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    if as_json:
        out.print_json(text)
        return
    rows = result if all(isinstance(v, dict) for v in result.values()) else {"": result}
    table = Table("mode", *metrics, title=title)
    for name, row in rows.items():
        table.add_row(name or str(row.get("mode", "")), *(f"{row[m]:.4f}" for m in metrics))
    out.print(table)
    if path is not None:
        console.print(f"[dim]wrote {path}[/]")


@eval_app.command("beir")
def beir(
    directory: Annotated[
        Path, typer.Argument(help="A BEIR dataset: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.")
    ],
    split: Annotated[str, typer.Option(help="The qrels split to score.")] = "test",
    mode: Annotated[
        str | None,
        typer.Option(help="dense, sparse, hybrid or all (default: the configured mode)."),
    ] = None,
    no_chunking: Annotated[
        bool,
        typer.Option(
            "--no-chunking", help="One point per document, truncated by the embedding model."
        ),
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="Score only the first N judged queries.", min=1)
    ] = None,
    min_ndcg: Annotated[
        float | None,
        typer.Option(
            help="Exit 1 when nDCG@10 (of the configured mode, with --mode all) is lower."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the JSON here.")
    ] = None,
) -> None:
    """Document-level nDCG@10, recall@10/@100 and MRR@10 of `rag search` on a BEIR split.

    The corpus goes through the product's ingest job into a throw-away collection; each
    query asks for 100 chunks, folded into documents by their best chunk. `--mode all`
    scores every mode on the one index (JSON: one object per mode).
    """
    from app.cli import _setup_logging
    from pipelines.evaluation import evaluate_beir, load_beir

    _setup_logging(False)
    all_modes: list[SearchMode | None] = ["dense", "sparse", "hybrid"]
    modes = all_modes if mode == "all" else [_check_mode(mode)]
    settings = Settings()
    for needed in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (directory / needed).is_file():
            console.print(f"[bold red]error[/]: {directory / needed} not found (a BEIR dataset?)")
            raise typer.Exit(2)
    data = load_beir(directory, split)
    queries = dict(list(data.queries.items())[:limit]) if limit else data.queries

    async def run() -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        with _progress(as_json) as bar:
            async with throwaway_index(
                settings, directory / "corpus.jsonl", chunking=not no_chunking, progress=bar
            ) as index:
                for search_mode in modes:
                    used = search_mode or settings.retrieval.mode
                    task = bar.add_task(f"queries ({used})", total=len(queries))

                    async def search(
                        text: str, k: int, m: SearchMode | None = search_mode
                    ) -> list[Hit]:
                        return await index.service.search(text, index.collection, k=k, mode=m)

                    started = time.perf_counter()
                    scores = await evaluate_beir(
                        search,
                        queries,
                        data.qrels,
                        depth=100,
                        progress=_advance(bar, task),
                    )
                    query_s = time.perf_counter() - started
                    results[used] = {
                        **scores,
                        "dataset": directory.name,
                        "split": split,
                        "chunking": not no_chunking,
                        "documents": index.documents,
                        "chunks": index.chunks,
                        **_config(settings, used),
                        "ingest_s": index.ingest_s,
                        "query_ms_mean": round(query_s * 1000 / max(len(queries), 1), 2),
                    }
        return results

    try:
        results = asyncio.run(run())
    except RagError as exc:
        console.print(f"[bold red]error[/]: {exc.message}")
        raise typer.Exit(2) from exc
    first = next(iter(results.values()))
    title = (
        f"{directory.name} {split}{' · no chunking' if no_chunking else ''} · "
        f"{first['queries']} queries"
    )
    result: dict[str, Any] = results if mode == "all" else first
    _emit(result, BEIR_METRICS, title, as_json, out_file)
    if min_ndcg is not None:
        checked = results.get(settings.retrieval.mode, first) if mode == "all" else first
        if checked["ndcg@10"] < min_ndcg:
            console.print(
                f"[bold red]below target[/]: nDCG@10 {checked['ndcg@10']:.4f} ({checked['mode']}) "
                f"< {min_ndcg}"
            )
            raise typer.Exit(1)


@eval_app.command("squad")
def squad(
    file: Annotated[Path, typer.Argument(help="A SQuAD v1.1/v2.0 JSON file.")],
    k: Annotated[int, typer.Option("--k", help="Deepest hit@k (hit@1 and hit@5 too).", min=1)] = 10,
    mode: Annotated[
        str | None, typer.Option(help="dense, sparse or hybrid (default: the configured mode).")
    ] = None,
    no_answers: Annotated[
        bool, typer.Option("--no-answers", help="Retrieval only: skip answer generation.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="Use only the first N questions.", min=1)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the JSON here.")
    ] = None,
) -> None:
    """hit@k (a retrieved chunk contains a gold answer), and with answers: how often the
    answer contains a gold answer and cites a source that does (citation correctness).

    The file's paragraphs are ingested into a throw-away collection; matching ignores case
    and whitespace.
    """
    from app.cli import _setup_logging
    from pipelines.evaluation import corpus_jsonl, evaluate_squad, load_squad

    _setup_logging(False)
    search_mode = _check_mode(mode)
    settings = Settings()
    if not file.is_file():
        console.print(f"[bold red]error[/]: {file} not found")
        raise typer.Exit(2)
    try:
        data = load_squad(file)
    except (ValueError, AttributeError, TypeError) as exc:
        console.print(f"[bold red]error[/]: {file} is not SQuAD JSON ({exc})")
        raise typer.Exit(2) from exc
    items = data.items[:limit] if limit else data.items
    ks = sorted({x for x in (1, 5, k) if x <= k})
    used_mode = search_mode or settings.retrieval.mode

    async def run() -> dict[str, Any]:
        with (
            tempfile.TemporaryDirectory(prefix="rag-eval-squad-") as tmp,
            _progress(as_json) as bar,
        ):
            corpus = corpus_jsonl(data.corpus, Path(tmp) / f"{file.stem}.jsonl")
            async with (
                throwaway_index(settings, corpus, chunking=True, progress=bar) as index,
                AsyncExitStack() as stack,
            ):
                answer = None
                if not no_answers:
                    answer = await _answerer(settings, index, stack, search_mode, bar)
                task = bar.add_task("questions", total=len(items))

                async def search(text: str, depth: int) -> list[Hit]:
                    return await index.service.search(
                        text, index.collection, k=depth, mode=search_mode
                    )

                scores = await evaluate_squad(
                    search,
                    items,
                    ks=ks,
                    answer=answer,
                    progress=_advance(bar, task),
                )
        return {
            **scores,
            "dataset": file.name,
            "documents": index.documents,
            "chunks": index.chunks,
            **_config(settings, used_mode),
            "answers": not no_answers,
            "ingest_s": index.ingest_s,
        }

    try:
        result = asyncio.run(run())
    except RagError as exc:
        console.print(f"[bold red]error[/]: {exc.message}")
        raise typer.Exit(2) from exc
    metrics = tuple(f"hit@{x}" for x in ks)
    if not no_answers:
        metrics += ("answer_contains_gold", "citation_correct")
    _emit(
        result,
        metrics,
        f"{file.name} · {used_mode} · {result['questions']} questions",
        as_json,
        out_file,
    )


async def _answerer(
    settings: Settings,
    index: EvalIndex,
    stack: AsyncExitStack,
    mode: SearchMode | None,
    bar: Progress,
) -> AnswerFn:
    """The product's RAG chain over the throw-away index, with the configured generator."""
    from pipelines.chain import AskInput, RagChain
    from pipelines.evaluation import GeneratedAnswer
    from pipelines.generators import build_generator
    from pipelines.types import ChatMessage

    starting = bar.add_task("starting the generator", total=None)
    generator = await build_generator(settings)
    stack.push_async_callback(generator.close)
    bar.update(starting, visible=False)
    chain = RagChain(index.service, generator, rewrite_followups=False)

    async def answer(question: str) -> GeneratedAnswer:
        ask = AskInput(
            messages=[ChatMessage("user", question)],
            collection=index.collection,
            mode=mode,
            max_tokens=settings.llm.max_tokens,
            temperature=0.0,
        )
        prepared = await chain.prepare(ask)
        text = "".join([c.text async for c in chain.generate(ask, prepared)])
        return GeneratedAnswer(text=text, sources=[s.hit.text for s in prepared.sources])

    return answer
