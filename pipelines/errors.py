"""The error family every layer raises; the app maps each kind to one HTTP status and envelope."""

from __future__ import annotations

from typing import ClassVar, Literal


class RagError(Exception):
    """Base: a machine-readable code, an HTTP status, and whether a retry may succeed; `param`
    names the request field at fault, when one is (OpenAI's `param`, the SDKs' `err.param`)."""

    code = "internal_error"
    status = 500
    retryable = False
    headers: ClassVar[dict[str, str] | None] = (
        None  # extra response headers (e.g. WWW-Authenticate)
    )

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def response_headers(self) -> dict[str, str] | None:
        """The headers an HTTP answer to this error carries."""
        return self.headers


class ConfigError(RagError):
    code = "config_error"
    status = 500


class InvalidInput(RagError):
    code = "invalid_request"
    status = 422


class BadRequest(RagError):
    """Well-formed but contradictory: the fields are each valid, together they are not."""

    code = "invalid_request"
    status = 400


class NotFound(RagError):
    code = "not_found"
    status = 404


class CollectionNotFound(NotFound):
    code = "collection_not_found"

    def __init__(self, collection: str) -> None:
        super().__init__(
            f"collection '{collection}' does not exist; ingest documents into it first"
        )
        self.collection = collection


class DocumentNotFound(NotFound):
    code = "document_not_found"

    def __init__(self, collection: str, doc_id: str) -> None:
        super().__init__(f"document '{doc_id}' does not exist in collection '{collection}'")


class OriginalNotKept(NotFound):
    code = "original_not_kept"

    def __init__(self, collection: str, doc_id: str) -> None:
        super().__init__(
            f"the original file of document '{doc_id}' in collection '{collection}' is not "
            "kept: it was ingested before originals were kept or with RAG_KEEP_ORIGINALS=false, "
            "or it is a line of a .jsonl corpus; ingest its file again with "
            "RAG_KEEP_ORIGINALS=true (the default) to keep it"
        )


class Unauthorized(RagError):
    code = "unauthorized"
    status = 401
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class PayloadTooLarge(RagError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(RagError):
    code = "unsupported_media_type"
    status = 415


class SchemaMismatch(ConfigError):
    code = "schema_mismatch"


class DependencyUnavailable(RagError):
    code = "dependency_unavailable"
    status = 503
    retryable = True


class StoreLocked(DependencyUnavailable):
    code = "store_locked"

    def __init__(self, collection: str, path: str) -> None:
        super().__init__(
            f"collection '{collection}' ({path}) is open in another process: the embedded "
            "store serves one process at a time. While `rag serve` runs, add documents "
            f"through it (POST /v1/collections/{collection}/documents, or the chat page's "
            "Upload), or stop it first; otherwise wait for the other ingest to finish."
        )


class StorageUnavailable(DependencyUnavailable):
    """The data dir cannot be read or written: permissions, a read-only or a full disk."""

    code = "storage_unavailable"

    def __init__(self, what: str, path: str, reason: str) -> None:
        super().__init__(f"cannot {what} at {path}: {reason}")
        self.reason = reason


class GeneratorUnavailable(DependencyUnavailable):
    code = "generator_unavailable"


class UpstreamTimeout(RagError):
    code = "upstream_timeout"
    status = 504
    retryable = True


class GenerationFailed(RagError):
    code = "generation_failed"
    status = 502
    retryable = True


class Forbidden(RagError):
    """A valid key that may not do this: its role is too low or the collection is not its."""

    code = "forbidden"
    status = 403


class RateLimited(RagError):
    """A key over one of its limits; `retry_after_s` says when the window frees a place."""

    code = "rate_limited"
    status = 429
    retryable = True

    def __init__(
        self, message: str, retry_after_s: int, *, limit: Literal["requests", "tokens"] = "requests"
    ) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)
        self.limit = limit  # OpenAI's 429 `type`: a request rate, or a token budget

    def response_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_s)}


class Overloaded(RateLimited):
    """Every generation place is taken and the queue is full: come back after Retry-After
    (estimated from how fast the queue drains)."""

    code = "overloaded"


class QueueTimeout(DependencyUnavailable):
    """A request waited for a generation place past RAG_LLM__QUEUE_TIMEOUT_S."""

    code = "queue_timeout"

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)

    def response_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_s)}
