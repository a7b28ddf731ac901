"""Per-key usage totals in the key database: one row per key and UTC day, incremented in one
statement as each answer is charged, read back by day for GET /v1/usage.

The increment is an upsert (`INSERT … ON CONFLICT (key_id, day) DO UPDATE SET n = n + …`),
which SQLite (3.24+) and PostgreSQL both run atomically: replicas sharing a PostgreSQL
database, or the server beside a CLI on one SQLite file, never lose an answer between a read
and a write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import KeyedColumnElement

from pipelines.keys.schema import KeyUsageRow

_COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "reference_cost_usd")
_KEY = ["key_id", "day"]


@dataclass(frozen=True, slots=True)
class UsageDay:
    """One key's answers on one UTC day."""

    key_id: str
    day: date
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    reference_cost_usd: float


def add_usage(session: Session, added: UsageDay) -> None:
    """Add `added` to its key's row for its day (made by the first answer of the day)."""
    values = {name: getattr(added, name) for name in ("key_id", "day", *_COUNTERS)}
    if session.get_bind().dialect.name == "postgresql":
        pg = postgresql.insert(KeyUsageRow).values(values)
        session.execute(pg.on_conflict_do_update(index_elements=_KEY, set_=_sums(pg.excluded)))
    else:
        lite = sqlite.insert(KeyUsageRow).values(values)
        session.execute(lite.on_conflict_do_update(index_elements=_KEY, set_=_sums(lite.excluded)))


def _sums(excluded: ReadOnlyColumnCollection[str, KeyedColumnElement[Any]]) -> dict[str, Any]:
    """Each counter: what the row holds plus what the refused insert carried."""
    return {name: getattr(KeyUsageRow, name) + excluded[name] for name in _COUNTERS}


def usage_days(
    session: Session, since: date, until: date, key_id: str | None = None
) -> list[UsageDay]:
    """The rows from `since` to `until` (both included), of one key or of all, by key then
    day."""
    query = (
        select(KeyUsageRow)
        .where(KeyUsageRow.day >= since, KeyUsageRow.day <= until)
        .order_by(KeyUsageRow.key_id, KeyUsageRow.day)
    )
    if key_id is not None:
        query = query.where(KeyUsageRow.key_id == key_id)
    return [
        UsageDay(
            key_id=row.key_id,
            day=row.day,
            requests=row.requests,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            cost_usd=row.cost_usd,
            reference_cost_usd=row.reference_cost_usd,
        )
        for row in session.scalars(query)
    ]
