"""API keys as records in a SQL database: `ApiKey` (the record), `KeyStore` (the database),
`UsageDay` (one key's answers on one UTC day)."""

from __future__ import annotations

from pipelines.keys.records import ApiKey, KeyNotFound, KeyStatus
from pipelines.keys.store import KeyStore
from pipelines.keys.usage import UsageDay

__all__ = ["ApiKey", "KeyNotFound", "KeyStatus", "KeyStore", "UsageDay"]
