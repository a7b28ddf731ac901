"""What the core reports as it works, for whoever measures it: the Telemetry port.

The core (admission and generation, retrieval, the ingest job) calls these methods at the
moments that matter to an operator; it never imports a metrics library. The service
implements the port with Prometheus (`app/metrics.py`); the `rag ingest` CLI with a registry
it writes to a textfile or pushes; tests with a recorder. `NO_TELEMETRY` is the default: every
component works unobserved.

Labels stay low-cardinality: a model name, a collection, a search mode, an outcome. Times are
seconds (floats), sizes counts.
"""

from __future__ import annotations

from typing import Literal, Protocol

# How a generation ended: the model stopped, hit max_tokens, the client left (or the resume
# window ran out) and it was aborted, its deadline passed, or it failed.
GenerationOutcome = Literal["stop", "length", "aborted", "timeout", "failed"]
RetrievalPhase = Literal["embed", "search", "rerank", "total"]
BatchKind = Literal["query", "rerank"]
# What an ingest run did with each document.
IngestOutcome = Literal["added", "updated", "unchanged", "deleted", "failed"]


class Telemetry(Protocol):
    # -- generation (pipelines/admission.py: every stream passes the gate) ------------------

    def generation_queued(self, model: str, wait_s: float) -> None:
        """A generation got its place after waiting `wait_s` (0 when one was free)."""

    def generation_first_token(self, model: str, seconds: float) -> None:
        """Time from the generation's start (its place taken) to its first text."""

    def generation_token_gap(self, model: str, seconds: float) -> None:
        """Time between two consecutive text chunks of one generation (inter-token latency)."""

    def generation_ended(
        self,
        model: str,
        outcome: GenerationOutcome,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        seconds: float,
        reason: str = "",
    ) -> None:
        """A generation is over, however it ended; `reason` says why an aborted or failed one
        was (e.g. `client_gone`, an error code)."""

    # -- retrieval (pipelines/retrieval.py) -------------------------------------------------

    def retrieval_phase(self, mode: str, phase: RetrievalPhase, seconds: float) -> None:
        """One phase of one search: the query's embedding, the store's search, the rerank,
        and the whole (`total`)."""

    def retrieval_hits(self, collection: str, mode: str, hits: int) -> None:
        """The hits one search returned (0: an empty retrieval)."""

    def batch(self, kind: BatchKind, size: int) -> None:
        """One model call of the micro-batcher and how many requests it served."""

    # -- ingest (ingest/pipeline.py: the CLI and the upload route) --------------------------

    def ingest_documents(self, collection: str, outcome: IngestOutcome, count: int) -> None:
        """Documents of one ingest run by outcome."""

    def ingest_embedded(self, collection: str, chunks: int, tokens: int, seconds: float) -> None:
        """Chunks embedded and stored by one ingest run: their tokens and the time it took."""

    # -- cost (usage × the configured prices) -----------------------------------------------

    def cost(self, model: str, usd: float, reference_usd: float | None) -> None:
        """The estimated cost of one answer, and what it would have cost at the hosted
        reference price (None: no reference configured)."""


class NoTelemetry:
    """Nobody measures: every report is dropped."""

    def generation_queued(self, model: str, wait_s: float) -> None:
        return None

    def generation_first_token(self, model: str, seconds: float) -> None:
        return None

    def generation_token_gap(self, model: str, seconds: float) -> None:
        return None

    def generation_ended(
        self,
        model: str,
        outcome: GenerationOutcome,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        seconds: float,
        reason: str = "",
    ) -> None:
        return None

    def retrieval_phase(self, mode: str, phase: RetrievalPhase, seconds: float) -> None:
        return None

    def retrieval_hits(self, collection: str, mode: str, hits: int) -> None:
        return None

    def batch(self, kind: BatchKind, size: int) -> None:
        return None

    def ingest_documents(self, collection: str, outcome: IngestOutcome, count: int) -> None:
        return None

    def ingest_embedded(self, collection: str, chunks: int, tokens: int, seconds: float) -> None:
        return None

    def cost(self, model: str, usd: float, reference_usd: float | None) -> None:
        return None


NO_TELEMETRY: Telemetry = NoTelemetry()
