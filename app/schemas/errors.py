"""The one error envelope: the body of every error response and of an SSE `error` event."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    field: str = Field(description="The request field, dotted (e.g. `messages.0.role`)")
    message: str


class ErrorBody(BaseModel):
    """A superset of OpenAI's error object (message, type, param, code): SDKs read it as-is."""

    code: str = Field(description="Machine-readable, e.g. `collection_not_found`")
    message: str = Field(description="What went wrong and what is accepted")
    type: str = Field(
        description="OpenAI's: `invalid_request_error`, `server_error`, or for a 429 the limit "
        "that was hit, `requests` (request rate, or the service at capacity) or `tokens`"
    )
    param: str | None = Field(default=None, description="The first field at fault, if any")
    request_id: str = Field(description="Also in the X-Request-ID header and the server log")
    retryable: bool = Field(description="Whether the same request may succeed later")
    details: list[ErrorDetail] | None = Field(
        default=None, description="Every field at fault (validation errors)"
    )


class ErrorEnvelope(BaseModel):
    """The body of every error response, and the data of an SSE `error` event."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "collection_not_found",
                        "message": "collection 'nope' does not exist; ingest documents first",
                        "type": "invalid_request_error",
                        "param": None,
                        "request_id": "4f1c2a…",
                        "retryable": False,
                    }
                }
            ]
        }
    )
    error: ErrorBody

    @classmethod
    def of(
        cls,
        code: str,
        message: str,
        request_id: str,
        retryable: bool = False,
        *,
        param: str | None = None,
        details: list[ErrorDetail] | None = None,
        kind: str | None = None,
    ) -> ErrorEnvelope:
        """`kind` is OpenAI's `type` where the code alone does not say it (a 429's limit);
        otherwise a retryable error is the server's, any other the request's."""
        if kind is None:
            retry = retryable or code == "internal_error"
            kind = "server_error" if retry else "invalid_request_error"
        return cls(
            error=ErrorBody(
                code=code,
                message=message,
                type=kind,
                param=param,
                request_id=request_id,
                retryable=retryable,
                details=details,
            )
        )

    def body(self) -> dict[str, Any]:
        """As sent: `details` only on validation errors."""
        data = self.model_dump()
        if self.error.details is None:
            del data["error"]["details"]
        return data
