"""Usage and cost wire models: an answer's estimated cost, and the per-key totals of
GET /v1/usage."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from pipelines.keys import UsageDay
from pipelines.pricing import Cost


class CostOut(BaseModel):
    """An answer's estimated cost (US dollars) at the configured price of its model
    (RAG_LLM__PRICES; an unpriced model costs 0), and the same tokens at the reference hosted
    model's list price (null when none is configured)."""

    usd: float
    reference_usd: float | None
    reference_model: str | None

    @classmethod
    def of(cls, cost: Cost) -> CostOut:
        return cls(
            usd=cost.usd, reference_usd=cost.reference_usd, reference_model=cost.reference_model
        )


class UsageTotals(BaseModel):
    requests: int = Field(description="Answers charged (JSON, streamed, chat completions)")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    reference_cost_usd: float = Field(
        description="The same tokens at the reference model's list price (0 when none is set)"
    )


class UsageDayOut(UsageTotals):
    day: date = Field(description="The UTC day")

    @classmethod
    def of(cls, row: UsageDay) -> UsageDayOut:
        return cls(
            day=row.day,
            requests=row.requests,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.prompt_tokens + row.completion_tokens,
            cost_usd=row.cost_usd,
            reference_cost_usd=row.reference_cost_usd,
        )


class KeyUsage(UsageTotals):
    key_id: str = Field(
        description="The key's id; `bootstrap` for RAG_SERVER__API_KEY, `open` for a server "
        "without keys"
    )
    name: str | None = Field(description="The key's name (null: a key no longer known)")
    days: list[UsageDayOut] = Field(description="One entry per UTC day with usage, oldest first")

    @classmethod
    def of(cls, key_id: str, name: str | None, days: list[UsageDay]) -> KeyUsage:
        out = [UsageDayOut.of(d) for d in days]
        return cls(
            key_id=key_id,
            name=name,
            days=out,
            requests=sum(d.requests for d in out),
            prompt_tokens=sum(d.prompt_tokens for d in out),
            completion_tokens=sum(d.completion_tokens for d in out),
            total_tokens=sum(d.total_tokens for d in out),
            cost_usd=round(sum(d.cost_usd for d in out), 12),
            reference_cost_usd=round(sum(d.reference_cost_usd for d in out), 12),
        )


class UsageReport(BaseModel):
    since: date
    until: date
    reference_model: str | None = Field(
        description="The hosted model whose list price `reference_cost_usd` uses (null: none)"
    )
    keys: list[KeyUsage] = Field(description="One entry per key with usage in the range")
