"""Which answer prompt makes the model cite: every prompt variant side by side in one run.

The dev QA set (bench/qa/qa-dev.json) is ingested once through the product's ingest job
into a throw-away index; one generator is started (the configured one: the bundled
SmolLM2-135M in-process by default, or `RAG_LLM__BASE_URL` / `RAG_LLM__MODEL` for a real
model on a GPU server); then each variant of pipelines/prompts.py PROMPTS answers every
question through the product's RagChain (`RAG_CITATIONS__PROMPT` is what picks one in the
service), `--concurrency` questions at a time, at temperature 0. Scored with `rag eval
squad`'s own metrics (pipelines/evaluation.py evaluate_squad): answer contains-gold, citation
rate, citation precision, supported citation rate, irrelevant sources, off-topic "nothing
found". Writes JSON (CPU, model, command, per variant the scores and each answer).

    .venv/bin/python bench/citation_prompts.py [--limit 30] [--variants plain,few-shot]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.progress import Progress  # noqa: E402

from app.cli.eval_index import make_answerer, throwaway_index  # noqa: E402
from bench.common import cpu_info, emit_report  # noqa: E402
from pipelines.evaluation import (  # noqa: E402
    GeneratedAnswer,
    contains_answer,
    corpus_jsonl,
    evaluate_squad,
    load_squad,
)
from pipelines.generators import build_generator  # noqa: E402
from pipelines.prompts import PROMPTS  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from pipelines.types import Hit  # noqa: E402

HEADLINE = (
    "answer_contains_gold",
    "citation_rate",
    "citation_precision",
    "supported_citation_rate",
    "irrelevant_sources_share",
    "off_topic_nothing_found",
)


def _with(settings: Settings, prompt: str) -> Settings:
    citations = settings.citations.model_copy(update={"prompt": prompt})
    return settings.model_copy(update={"citations": citations})


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    data = load_squad(args.qa)
    items = data.items[: args.limit] if args.limit else data.items
    variants = args.variants.split(",") if args.variants else list(PROMPTS)
    unknown = [v for v in variants if v not in PROMPTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}: one of {', '.join(PROMPTS)}")
    gold = {i.question: i for i in [*items, *data.off_topic]}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cite-") as tmp, Progress(disable=True) as bar:
        corpus = corpus_jsonl(data.corpus, Path(tmp) / "qa-dev.jsonl")
        async with throwaway_index(settings, corpus, chunking=True, progress=bar) as index:
            started = time.perf_counter()
            generator = await build_generator(settings)
            start_s = time.perf_counter() - started
            try:

                async def search(text: str, depth: int) -> list[Hit]:
                    return await index.search(text, depth, None)

                for name in variants:
                    answer = make_answerer(
                        _with(settings, name), index, generator, None, max_tokens=args.max_tokens
                    )
                    answers: list[dict[str, Any]] = []

                    async def recorded(
                        question: str, answer: Any = answer, answers: list[Any] = answers
                    ) -> GeneratedAnswer:
                        got: GeneratedAnswer = await answer(question)
                        item = gold[question]
                        answers.append(
                            {
                                "id": item.qid,
                                "text": got.text,
                                "sources": len(got.sources),
                                "contains_gold": bool(item.answers)
                                and contains_answer(got.text, item.answers),
                                "cited": sorted({c.n for c in got.checked_citations()}),
                                "invalid_markers": got.invalid_markers,
                            }
                        )
                        return got

                    began = time.perf_counter()
                    scores = await evaluate_squad(
                        search,
                        items,
                        ks=(1, 5),
                        answer=recorded,
                        off_topic=data.off_topic,
                        concurrency=args.concurrency,
                    )
                    wall = round(time.perf_counter() - began, 1)
                    results[name] = {
                        **scores,
                        "wall_s": wall,
                        "answers": sorted(answers, key=lambda a: str(a["id"])),
                    }
                    line = " ".join(f"{m}={scores.get(m, float('nan')):.3f}" for m in HEADLINE)
                    print(f"{name}: {line} ({wall} s)", file=sys.stderr, flush=True)
            finally:
                await generator.close()
    return {
        "bench": "citation_prompts",
        "command": " ".join(["python", *sys.argv]),
        "cpu": cpu_info(),
        "machine": platform.node(),
        "model": settings.llm.model,
        "llm_base_url": settings.llm.base_url,
        "qa_set": str(args.qa.relative_to(REPO) if args.qa.is_relative_to(REPO) else args.qa),
        "questions": len(items),
        "off_topic_questions": len(data.off_topic),
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "temperature": 0.0,
        "generator_start_s": round(start_s, 1),
        "documents": index.documents,
        "chunks": index.chunks,
        "support_floor": settings.citations.support_floor,
        "relevance_floor": settings.retrieval.relevance_floor,
        "default_prompt": settings.citations.prompt,
        "summary": {name: {m: r.get(m) for m in HEADLINE} for name, r in results.items()},
        "variants": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qa", type=Path, default=REPO / "bench" / "qa" / "qa-dev.json")
    parser.add_argument("--variants", default="", help="comma-separated (default: all)")
    parser.add_argument("--limit", type=int, default=0, help="first N answerable questions")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "citation-prompts.json"
    )
    emit_report(asyncio.run(main(parser.parse_args())), parser.parse_args().out)
