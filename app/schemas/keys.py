"""API-key wire models: what an admin sends to create a key, and what listings show (never
the secret: it is in `KeyCreated.token`, once)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pipelines.access import Role
from pipelines.keys import ApiKey


class KeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"name": "support-bot", "role": "read", "collections": ["manuals"]},
                {"name": "hr-team", "role": "write", "collections": ["hr"], "groups": ["hr"]},
            ]
        },
    )
    name: str = Field(min_length=1, max_length=64, description="Who or what holds the key")
    role: Role = Field(
        default="read",
        description="read: search, ask, chat; write: also upload and delete documents; "
        "admin: also API keys and collections (every collection, every document)",
    )
    collections: list[str] = Field(
        default_factory=lambda: ["default"],
        min_length=1,
        max_length=256,
        description="The collections the key may use, or ['*'] for all",
    )
    groups: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Document groups the key may read beyond public documents",
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the key stops working (ISO 8601 with a time zone)"
    )
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)


class KeyOut(BaseModel):
    id: str = Field(description="The key's public id (what logs and listings show)")
    prefix: str = Field(description="How the key starts, to recognise it (not the secret)")
    name: str
    role: Role
    collections: list[str]
    groups: list[str]
    status: Literal["active", "revoked", "expired"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    requests_per_minute: int | None
    tokens_per_day: int | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            prefix=key.prefix,
            name=key.name,
            role=key.role,
            collections=list(key.collections),
            groups=list(key.groups),
            status=key.status(),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at,
            requests_per_minute=key.requests_per_minute,
            tokens_per_day=key.tokens_per_day,
        )


class KeyCreated(BaseModel):
    key: KeyOut
    token: str = Field(
        description="The API key itself: shown this once, store it now (only a hash is kept)"
    )


class KeyList(BaseModel):
    keys: list[KeyOut]


class Me(BaseModel):
    """The caller as the server sees it (the chat page shows Upload only to `write`)."""

    auth: bool = Field(description="Whether this server wants API keys at all")
    id: str
    name: str
    role: Role
    collections: list[str] = Field(description="['*'] for all")
    groups: list[str] | None = Field(description="null: every document (admin)")
    can_upload: bool
