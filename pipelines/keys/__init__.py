"""API keys as records in a SQL database: `ApiKey` (the record), `KeyStore` (the database)."""

from __future__ import annotations

from pipelines.keys.records import ApiKey, KeyNotFound, KeyStatus
from pipelines.keys.store import KeyStore

__all__ = ["ApiKey", "KeyNotFound", "KeyStatus", "KeyStore"]
