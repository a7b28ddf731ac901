"""API-key authentication: `Authorization: Bearer <key>` on every /v1 endpoint when
RAG_SERVER__API_KEY is set (what OpenAI SDKs send as their `api_key`)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.deps import ServicesDep
from pipelines.errors import Unauthorized

bearer = HTTPBearer(
    auto_error=False,
    description="The server's API key (RAG_SERVER__API_KEY), when one is set.",
)


async def require_api_key(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    expected = services.settings.server.api_key
    if expected is None:
        return
    if credentials is None:
        raise Unauthorized(
            "missing API key: send the header 'Authorization: Bearer <key>' "
            "(this server sets RAG_SERVER__API_KEY)"
        )
    if not hmac.compare_digest(
        credentials.credentials.encode(), expected.get_secret_value().encode()
    ):
        raise Unauthorized("invalid API key")
