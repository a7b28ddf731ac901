"""What an answer costs: its tokens at the configured price of its model (`RAG_LLM__PRICES`),
and the same tokens at a hosted API's list price for comparison (`reference_model` at
`reference_price`).

An estimate, not a bill: a price is what the operator says a million tokens cost them (a GPU
hour over what it generates), the usage is what the generator reported. One pure function, so
the answer's `done` event, its JSON, the log line, the per-key totals and the cost counters
all show the same number.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.settings import LLMSettings, Price

# The price entry for any model without its own.
ANY_MODEL = "*"
_PER = 1_000_000
# Dollars to 12 decimals: a millionth of a cent per token and no float dust (0.1 + 0.2).
_DIGITS = 12


@dataclass(frozen=True, slots=True)
class Cost:
    """One answer's estimated cost in US dollars. `model` is the name it was priced under
    (the request's model or alias, else the default model); `reference_usd` and
    `reference_model` are None when no reference price is configured."""

    model: str
    usd: float
    reference_usd: float | None
    reference_model: str | None


def price_of(llm: LLMSettings, model: str | None) -> Price | None:
    """The price of `model` (an alias of `llm.models`, a served name, None: the default
    model): its own entry, else its served name's, else "*"; None when none applies (an
    unpriced model costs 0)."""
    name = model or llm.model
    served = llm.models[name].model if name in llm.models else name
    for key in (name, served, ANY_MODEL):
        if key in llm.prices:
            return llm.prices[key]
    return None


def tokens_at(price: Price, prompt_tokens: int, completion_tokens: int) -> float:
    """What the tokens cost at `price` (per million, prompt and completion apart)."""
    usd = (
        prompt_tokens * price.prompt_per_million + completion_tokens * price.completion_per_million
    ) / _PER
    return round(usd, _DIGITS)


def estimate(
    llm: LLMSettings, model: str | None, prompt_tokens: int, completion_tokens: int
) -> Cost:
    """An answer's cost from its usage, and at the reference price."""
    price = price_of(llm, model)
    reference = llm.reference_price
    return Cost(
        model=model or llm.model,
        usd=0.0 if price is None else tokens_at(price, prompt_tokens, completion_tokens),
        reference_usd=None
        if reference is None
        else tokens_at(reference, prompt_tokens, completion_tokens),
        reference_model=None if reference is None else llm.reference_model,
    )
