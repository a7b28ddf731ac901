"""One Settings object (env prefix RAG_, nested with __); unset means the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.types import SearchMode

# How the embedding model runs (EmbeddingSettings.backend; pipelines/embedder/).
EmbeddingBackend = Literal["auto", "torch", "onnx", "onnx-int8", "openvino"]
BUNDLED_EMBEDDING_MODEL = "bundled:all-MiniLM-L6-v2"
BUNDLED_MODEL = "bundled:smollm2-135m-instruct"
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "xxx"}


def _blank_to_none(value: object) -> object:
    # `RAG_SERVER__API_KEY=` (e.g. compose's `${RAG_SERVER__API_KEY:-}`) means unset.
    return None if isinstance(value, str) and not value.strip() else value


class QdrantSettings(BaseModel):
    """Qdrant: unset `url` means the embedded Qdrant Edge shards under the data dir."""

    url: str | None = None
    api_key: SecretStr | None = None
    shard_number: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)
    hnsw_m: int = Field(default=16, ge=4)
    hnsw_ef_construct: int = Field(default=128, ge=8)
    # Search-time ef: where recall@10 against exact search at 1M points (int8, rescored)
    # levels off for a fraction of a millisecond (bench/search.py --ef-sweep; docs/benchmarks.md).
    hnsw_ef: int = Field(default=384, ge=8)
    # Dense vectors also kept as int8 in RAM (scalar quantization): the HNSW walk compares
    # those, then the best `oversampling`·k are rescored with the original vectors: faster
    # search and index build than fp32 at equal recall (docs/benchmarks.md).
    # Fixed when a collection is created; "none" on an int8 collection searches the originals.
    quantization: Literal["int8", "none"] = "int8"
    oversampling: float = Field(default=2.0, ge=1.0)
    # Hybrid (and MMR) candidate lists rescored with the original vectors too (~200 per side).
    # Off, fusion orders them by their int8 scores: SciFact hybrid nDCG@10 unchanged and the
    # dense side faster, but the fused top 10 agrees less with exact search at 1M
    # (docs/benchmarks.md).
    rescore_candidates: bool = True
    # Embedded store: "cached" reads a collection's payloads (chunk texts) into the OS page
    # cache when it opens (evictable); "cold" reads them from disk on first use, one read per
    # payload of a fresh query (docs/benchmarks.md).
    payload_memory: Literal["cached", "cold"] = "cached"
    # Embedded store: writes are refused while less than this is free under the data dir.
    # The engine writes through memory maps, and a full disk kills the process (SIGBUS)
    # half-way through a write instead of failing it: refusing first keeps the shard whole.
    min_free_mb: int = Field(default=64, ge=0)


class EmbeddingSettings(BaseModel):
    model: str = BUNDLED_EMBEDDING_MODEL
    device: str | None = None  # None: CUDA when available, else CPU
    batch_size: int = Field(default=64, ge=1)
    # "auto": torch on a GPU; on CPUs OpenVINO when installed, else "onnx" (pipelines/embedder/).
    # "onnx" / "onnx-int8" run an ONNX export of the model made once under the data dir with
    # ONNX Runtime; "openvino" runs the same export with OpenVINO (bf16 on AMX CPUs).
    backend: EmbeddingBackend = "auto"
    threads: int | None = Field(default=None, ge=1)  # None: every core this process may use
    # Query embeddings (and reranker calls) of concurrent requests share one model call
    # (adaptive micro-batching, BentoML's idea): a lone query runs at once; queries that
    # arrive while a call runs go together in the next, up to `query_batch_max` of them.
    # `query_batch_wait_ms` > 0 also holds a call that long for company. 1 = off.
    query_batch_max: int = Field(default=64, ge=1)
    query_batch_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    cache_dir: Path | None = None  # where ONNX exports live; None: <data_dir>/models/embeddings


class ChunkingSettings(BaseModel):
    # In embedder tokens; never above the model's max sequence length.
    chunk_tokens: int = Field(default=256, ge=16)
    overlap_tokens: int = Field(default=32, ge=0)


class LLMModel(BaseModel):
    """One named model behind an OpenAI-compatible server."""

    base_url: str
    model: str
    api_key: SecretStr | None = None


class Price(BaseModel):
    """US dollars per million tokens, prompt and completion (as hosted APIs list them)."""

    prompt_per_million: float = Field(ge=0)
    completion_per_million: float = Field(ge=0)


class LLMSettings(BaseModel):
    """Unset `base_url` means vLLM in-process with `model` (default: bundled SmolLM2-135M)."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = BUNDLED_MODEL
    # Extra named models/aliases for routing by request, e.g. {"large": {...}}.
    models: dict[str, LLMModel] = Field(default_factory=dict)
    max_model_len: int = Field(default=2048, ge=256)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.2, ge=0, le=2)
    # One generation's deadline (also an upstream's read timeout): past it a stream ends with
    # an `error` event, a JSON answer with 504.
    timeout_s: float = Field(default=120.0, gt=0)
    # Admission control: at most `max_concurrent` generations run (None: what the engine
    # batches well: the in-process engine's max_num_seqs; 64 for a server upstream), at most
    # `max_queue` wait for a place; beyond, 429 with Retry-After from the queue's drain rate.
    # One that waits past `queue_timeout_s` gets 503 (retryable).
    max_concurrent: int | None = Field(default=None, ge=1)
    max_queue: int = Field(default=256, ge=0)
    queue_timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=2, ge=0)
    enforce_eager: bool = True
    # In-process vLLM's compute dtype. "auto": on CPU, bfloat16 where the CPU computes it
    # natively (AVX512-BF16/AMX, Arm), else float32 (emulated bf16 on an AVX2-only CPU
    # prefills several times slower: docs/benchmarks.md); on GPU, vLLM's own choice.
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    # Estimated cost per answer: prices per model name (the served name, or "*" for any),
    # e.g. {"*": {"prompt_per_million": 0.02, "completion_per_million": 0.05}} for what your
    # GPU hour comes to; unset: cost 0. Beside it, what the same tokens would cost at a
    # hosted API's list price (`reference_model` at `reference_price`; None: not shown).
    prices: dict[str, Price] = Field(default_factory=dict)
    reference_model: str = "gpt-4o-mini"
    reference_price: Price | None = Field(
        default_factory=lambda: Price(prompt_per_million=0.15, completion_per_million=0.60)
    )
    cpu_kvcache_gib: int = Field(default=2, ge=1)


class RetrievalSettings(BaseModel):
    """Query-time retrieval; the defaults were chosen on SciFact train (docs/benchmarks.md)."""

    k: int = Field(default=5, ge=1, le=100)
    max_k: int = Field(default=100, ge=1)
    mode: SearchMode = "hybrid"
    # Hybrid: each side's top `prefetch` chunks (same filters), scores normalized per query
    # ("convex": min-max, "dbsf": mean ± 3 sd) and summed with `dense_weight` for the dense
    # side; "rrf" fuses ranks instead, 1/(rrf_k + rank) weighted the same way.
    fusion: Literal["convex", "dbsf", "rrf"] = "convex"
    dense_weight: float = Field(default=0.5, ge=0, le=1)
    rrf_k: int = Field(default=60, ge=1)
    prefetch: int = Field(default=200, ge=1, le=1000)
    # BM25 document weights are computed at ingest: changing these needs a re-ingest.
    bm25_k1: float = Field(default=0.9, ge=0)
    bm25_b: float = Field(default=0.5, ge=0, le=1)
    bm25_avg_len: float = Field(default=128.0, gt=0)
    # Drop a hit whose text is near-identical (word-shingle Jaccard) to a better one.
    dedupe: bool = True
    dedupe_similarity: float = Field(default=0.9, gt=0, le=1)
    # Maximal marginal relevance over the candidates (0 = off, 1 = only diversity).
    mmr_diversity: float = Field(default=0.0, ge=0, le=1)
    # A sentence-transformers CrossEncoder (local path or cached name); unset = no reranking.
    rerank_model: str | None = None
    rerank_candidates: int = Field(default=50, ge=1, le=1000)
    rerank_batch_size: int = Field(default=32, ge=1)
    # The relevance floor (issue 19). Each hit's probability of relevance is a logistic
    # function of its absolute scores, never of its rank among this query's candidates:
    # p = 1 / (1 + exp(-(intercept + a·cosine + b·BM25))), with (intercept, a, b) per mode,
    # fitted on SciFact train (relevant vs non-relevant chunks among the top 10 retrieved;
    # bench/relevance_floor.py, docs/benchmarks.md "Relevance floor"). Hits with p below the
    # floor are neither given to the model nor shown; p is the `score` sources and search
    # hits show. 0 turns the floor off (scores stay calibrated). The floor is the highest
    # that keeps SciFact train recall@5 and @10 within 0.5 point in every mode. SciFact's
    # claims each have one or two relevant abstracts in 5,183, so even a good hit's p is
    # modest: 0.02–0.24 for the samples' on-topic questions, ≤ 0.003 for off-topic ones.
    relevance_floor: float = Field(default=0.01, ge=0, le=1)
    calibration_dense: tuple[float, float, float] = (-8.4207, 11.6928, 0.0)
    calibration_sparse: tuple[float, float, float] = (-7.3432, 8.4121, 0.0544)
    calibration_hybrid: tuple[float, float, float] = (-6.8759, 6.649, 0.0748)
    # With a reranker, its reranked head's p is 1 / (1 + exp(-(intercept + a·score))):
    # (0, 1) reads a cross-encoder's logit as ms-marco models are trained to give it. Not
    # fitted here (no cross-encoder ships offline): fit it for the model you set.
    calibration_rerank: tuple[float, float] = (0.0, 1.0)


class CitationSettings(BaseModel):
    """Citation integrity (issue 19): `[n]` markers parsed as the answer streams, each cited
    sentence matched to the span of its source that supports it best."""

    enabled: bool = True
    # Below this support (cosine of the answer sentence and the best source span, both
    # embedded by the service's embedder) a citation is marked unsupported. Calibrated on
    # SciFact train (bench/citation_support.py, docs/benchmarks.md "Citation support"): a claim
    # vs its own abstract, vs same-topic BM25 hard negatives and random abstracts; 0.54
    # maximizes F1 (recall 0.83; random abstracts supported 1 %, hard negatives 52 %). Set for
    # the bundled all-MiniLM-L6-v2: recalibrate with another embedder.
    support_floor: float = Field(default=0.54, ge=-1, le=1)
    # The answer prompt's variant by name (pipelines/prompts.py PROMPTS; measured side by
    # side by bench/citation_prompts.py, docs/benchmarks.md "Citations and prompts").
    prompt: str = "extract"


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_question_chars: int = Field(default=4000, ge=1)
    # Every chat message (history included, content parts joined) and all of them together:
    # longer ones are a 422 before anything is tokenized.
    max_message_chars: int = Field(default=16_000, ge=1)
    max_total_chars: int = Field(default=64_000, ge=1)
    max_upload_mb: int = Field(default=50, ge=1)
    # The bootstrap admin key: `Authorization: Bearer <api_key>` opens every /v1 endpoint
    # (health, metrics, the chat page and the API docs stay open). Keys made with
    # `rag keys create` (the key database) work beside it.
    api_key: SecretStr | None = None
    # "auto": /v1 wants a key once one exists (this bootstrap key or any in the key database);
    # with none, the service runs open on a loopback address and refuses to start on any
    # other. "on": a key always. "off": open on purpose, wherever it listens.
    auth: Literal["auto", "on", "off"] = "auto"
    # A stream whose client leaves keeps generating this long for a reconnect carrying
    # `Last-Event-ID` (the same request again): the client gets the rest of the same answer.
    # Nobody back in time: generation is aborted. 0: abort at once.
    stream_resume_s: float = Field(default=15.0, ge=0, le=600)
    # SSE keep-alive comment interval.
    sse_ping_s: float = Field(default=15.0, gt=0, le=300)

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_unset(cls, value: object) -> object:
        return _blank_to_none(value)


class DatabaseSettings(BaseModel):
    """Where API keys live (SQLAlchemy URL). Unset: an SQLite file under the data dir; a
    PostgreSQL URL (`postgresql://…`) when several service replicas share them."""

    url: str | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return _blank_to_none(value)


class RedisSettings(BaseModel):
    """Unset: per-key limits are counted in each process; a `redis://` URL shares them."""

    url: str | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return _blank_to_none(value)


class LimitSettings(BaseModel):
    """Defaults for keys created without their own limits (None: unlimited)."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)


class LogSettings(BaseModel):
    """`json`: one JSON object per line (for a log pipeline); `text`: for a terminal."""

    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    env: Literal["dev", "prod"] = "dev"
    data_dir: Path = Path("./data")
    # Keep a copy of each ingested file under <data_dir>/originals/<collection>/<doc_id>, so
    # the chat page can open a cited PDF at its page (GET .../documents/{doc_id}/file). Costs
    # one copy of every ingested file on disk; a .jsonl corpus is not kept (its lines are the
    # documents). Off: nothing new is kept (copies kept before are still served and deleted).
    keep_originals: bool = True
    default_collection: str = "default"
    # OpenAI-compatible model names mapped to collections, e.g. {"docs": "manuals"}.
    openai_model_aliases: dict[str, str] = Field(default_factory=dict)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    citations: CitationSettings = Field(default_factory=CitationSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_prod(self) -> Settings:
        if self.env == "prod":
            for name, secret in (
                ("qdrant.api_key", self.qdrant.api_key),
                ("llm.api_key", self.llm.api_key),
            ):
                if secret is not None and secret.get_secret_value().lower() in _PLACEHOLDER_SECRETS:
                    raise ValueError(f"{name} is a placeholder; set a real secret for env=prod")
        return self

    @property
    def qdrant_dir(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def database_url(self) -> str:
        """The key database's SQLAlchemy URL (default: SQLite under the data dir)."""
        return self.database.url or f"sqlite:///{(self.data_dir / 'ragserve.db').resolve()}"

    @property
    def originals_dir(self) -> Path:
        return self.data_dir / "originals"

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def embedding_cache_dir(self) -> Path:
        """Where the embedder's ONNX exports live (made once, reused by every process)."""
        return self.embedding.cache_dir or self.model_dir / "embeddings"
