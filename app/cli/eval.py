"""`rag eval`: retrieval quality on BEIR datasets and end-to-end QA on SQuAD files."""

from __future__ import annotations

import json
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.console import (
    advancer,
    check_mode,
    console,
    fail,
    out,
    progress_bar,
    run,
    start_command,
)
from app.cli.eval_index import open_answerer, throwaway_index
from pipelines.settings import Settings
from pipelines.types import SEARCH_MODES, Hit, SearchMode

eval_app = typer.Typer(
    help="Evaluate retrieval (BEIR datasets) and answers (SQuAD files) on a throw-away index.",
    no_args_is_help=True,
)
BEIR_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
# The options both evaluations share.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
OutFile = Annotated[Path | None, typer.Option("--out", help="Also write the JSON here.")]


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
        cells = (f"{row[m]:.4f}" if m in row else "-" for m in metrics)  # not measured: "-"
        table.add_row(name or str(row.get("mode", "")), *cells)
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
    as_json: JsonFlag = False,
    out_file: OutFile = None,
) -> None:
    """Document-level nDCG@10, recall@10/@100 and MRR@10 of `rag search` on a BEIR split.

    The corpus goes through the product's ingest job into a throw-away collection; each
    query asks for 100 chunks, folded into documents by their best chunk. `--mode all`
    scores every mode on the one index (JSON: one object per mode).
    """
    from pipelines.evaluation import evaluate_beir, load_beir

    start_command()
    modes: list[SearchMode | None] = list(SEARCH_MODES) if mode == "all" else [check_mode(mode)]
    settings = Settings()
    for needed in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (directory / needed).is_file():
            raise fail(f"{directory / needed} not found (a BEIR dataset?)")
    data = load_beir(directory, split)
    queries = dict(list(data.queries.items())[:limit]) if limit else data.queries

    async def main() -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        with progress_bar(as_json, width=20, eta=True) as bar:
            async with throwaway_index(
                settings, directory / "corpus.jsonl", chunking=not no_chunking, progress=bar
            ) as index:
                for search_mode in modes:
                    used = search_mode or settings.retrieval.mode
                    task = bar.add_task(f"queries ({used})", total=len(queries))

                    async def search(
                        text: str, k: int, m: SearchMode | None = search_mode
                    ) -> list[Hit]:
                        return await index.search(text, k, m)

                    started = time.perf_counter()
                    scores = await evaluate_beir(
                        search, queries, data.qrels, depth=100, progress=advancer(bar, task)
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

    results = run(main())
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
        int | None,
        typer.Option(
            help="Use only the first N questions (and the first N off-topic ones).", min=1
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Questions answered at once (the engine batches them).", min=1)
    ] = 1,
    as_json: JsonFlag = False,
    out_file: OutFile = None,
) -> None:
    """hit@k (a retrieved chunk contains a gold answer), and with answers, trust: how often
    the answer contains a gold answer, cites a valid source (citation rate), cites sources
    that hold the gold answer (citation precision) and that the chain found supported, and
    how many shown sources are irrelevant (no gold answer, not the gold document).

    Questions marked `"off_topic": true` (no answers) score the share answered "nothing
    found" with no sources. The file's paragraphs are ingested into a throw-away collection;
    matching ignores case and whitespace; the prompt variant is RAG_CITATIONS__PROMPT.
    """
    from pipelines.evaluation import corpus_jsonl, evaluate_squad, load_squad

    start_command()
    search_mode = check_mode(mode)
    settings = Settings()
    if not file.is_file():
        raise fail(f"{file} not found")
    try:
        data = load_squad(file)
    except (ValueError, AttributeError, TypeError) as exc:
        raise fail(f"{file} is not SQuAD JSON ({exc})") from exc
    items = data.items[:limit] if limit else data.items
    off_topic = data.off_topic[:limit] if limit else data.off_topic
    ks = sorted({x for x in (1, 5, k) if x <= k})
    used_mode = search_mode or settings.retrieval.mode

    async def main() -> dict[str, Any]:
        with (
            tempfile.TemporaryDirectory(prefix="rag-eval-squad-") as tmp,
            progress_bar(as_json, width=20, eta=True) as bar,
        ):
            corpus = corpus_jsonl(data.corpus, Path(tmp) / f"{file.stem}.jsonl")
            async with (
                throwaway_index(settings, corpus, chunking=True, progress=bar) as index,
                AsyncExitStack() as stack,
            ):
                answer = None
                if not no_answers:
                    answer = await open_answerer(settings, index, stack, search_mode, bar)
                task = bar.add_task("questions", total=len(items) + len(off_topic))

                async def search(text: str, depth: int) -> list[Hit]:
                    return await index.search(text, depth, search_mode)

                scores = await evaluate_squad(
                    search,
                    items,
                    ks=ks,
                    answer=answer,
                    progress=advancer(bar, task),
                    off_topic=off_topic,
                    concurrency=concurrency,
                )
        return {
            **scores,
            "dataset": file.name,
            "documents": index.documents,
            "chunks": index.chunks,
            **_config(settings, used_mode),
            "answers": not no_answers,
            **({} if no_answers else {"prompt": settings.citations.prompt}),
            "citations_enabled": settings.citations.enabled,
            "ingest_s": index.ingest_s,
        }

    result = run(main())
    metrics = tuple(f"hit@{x}" for x in ks)
    if not no_answers:
        metrics += ("answer_contains_gold", "citation_correct", "citation_rate")
        metrics += ("citation_precision", "supported_citation_rate", "irrelevant_sources_share")
    if off_topic:
        metrics += ("off_topic_nothing_found",)
    _emit(
        result,
        metrics,
        f"{file.name} · {used_mode} · {result['questions']} questions",
        as_json,
        out_file,
    )
