"""Every wire model of the HTTP API (the contract in DESIGN.md), one module per part.

`errors` (the one envelope), `query` (search and answers, SSE event bodies), `documents`
(collections and uploads), `openai` (the OpenAI-compatible shapes, imported from there).
"""

from app.schemas.documents import (
    CollectionList,
    CollectionOut,
    DeletedDocument,
    DocumentList,
    DocumentOut,
    FailedFile,
    UploadedFile,
    UploadResult,
)
from app.schemas.errors import ErrorBody, ErrorDetail, ErrorEnvelope
from app.schemas.query import (
    AnswerOptions,
    AskRequest,
    AskResponse,
    DoneEvent,
    FilterValue,
    Health,
    Message,
    RangeFilter,
    SearchHit,
    SearchRequest,
    SearchResponse,
    SourceOut,
    SourcesEvent,
    TokenEvent,
    UsageOut,
    check_max_chars,
    check_message_chars,
    not_blank,
    to_domain_filters,
)

__all__ = [
    "AnswerOptions",
    "AskRequest",
    "AskResponse",
    "CollectionList",
    "CollectionOut",
    "DeletedDocument",
    "DocumentList",
    "DocumentOut",
    "DoneEvent",
    "ErrorBody",
    "ErrorDetail",
    "ErrorEnvelope",
    "FailedFile",
    "FilterValue",
    "Health",
    "Message",
    "RangeFilter",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "SourceOut",
    "SourcesEvent",
    "TokenEvent",
    "UploadResult",
    "UploadedFile",
    "UsageOut",
    "check_max_chars",
    "check_message_chars",
    "not_blank",
    "to_domain_filters",
]
