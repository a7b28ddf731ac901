"""An answer's estimated cost: the model's price, else the served model's, else "*", else 0;
beside it the same tokens at the reference hosted model's list price."""

from __future__ import annotations

import pytest

from pipelines.pricing import estimate, price_of, tokens_at
from pipelines.settings import BUNDLED_MODEL, LLMModel, LLMSettings, Price

LOCAL = Price(prompt_per_million=0.02, completion_per_million=0.05)
BIG = Price(prompt_per_million=1.0, completion_per_million=3.0)
ANY = Price(prompt_per_million=0.5, completion_per_million=0.5)


def llm(**overrides: object) -> LLMSettings:
    return LLMSettings.model_validate(
        {"models": {"big": LLMModel(base_url="http://gpu:8000/v1", model="big-served")}} | overrides
    )


def test_tokens_are_priced_per_million_prompt_and_completion_apart() -> None:
    assert tokens_at(BIG, 1_000_000, 0) == 1.0
    assert tokens_at(BIG, 0, 1_000_000) == 3.0
    assert tokens_at(BIG, 42, 5) == pytest.approx((42 * 1.0 + 5 * 3.0) / 1e6)
    assert tokens_at(Price(prompt_per_million=0.1, completion_per_million=0.2), 1, 1) == 3e-7


def test_a_model_gets_its_own_price_then_its_served_names_then_any() -> None:
    prices = {BUNDLED_MODEL: LOCAL, "big-served": BIG, "*": ANY}
    settings = llm(prices=prices)
    assert price_of(settings, None) == LOCAL  # None: the default model
    assert price_of(settings, "big") == BIG  # an alias: its served model's price
    assert price_of(settings, "other") == ANY
    assert price_of(llm(prices={"big": LOCAL, "big-served": BIG}), "big") == LOCAL
    assert price_of(llm(prices={BUNDLED_MODEL: LOCAL}), "other") is None


def test_estimate_at_the_price_and_the_default_reference() -> None:
    cost = estimate(llm(prices={"*": ANY}), None, 42, 5)
    assert cost.model == BUNDLED_MODEL
    assert cost.usd == pytest.approx(47 * 0.5 / 1e6)
    # gpt-4o-mini's list price: $0.15 / $0.60 per million.
    assert cost.reference_model == "gpt-4o-mini"
    assert cost.reference_usd == pytest.approx((42 * 0.15 + 5 * 0.60) / 1e6)
    assert estimate(llm(prices={"*": ANY}), "big", 42, 5).model == "big"


def test_unpriced_costs_zero_and_no_reference_shows_none() -> None:
    cost = estimate(llm(reference_price=None), "big", 1_000, 1_000)
    assert cost.usd == 0.0
    assert cost.reference_usd is None and cost.reference_model is None
    assert estimate(llm(prices={"*": ANY}), None, 0, 0).usd == 0.0


def test_prices_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.settings import Settings

    monkeypatch.setenv(
        "RAG_LLM__PRICES", '{"*": {"prompt_per_million": 0.02, "completion_per_million": 0.05}}'
    )
    monkeypatch.setenv("RAG_LLM__REFERENCE_MODEL", "gpt-4.1")
    settings = Settings(_env_file=None)
    assert settings.llm.prices == {"*": LOCAL}
    assert estimate(settings.llm, None, 1_000_000, 0).usd == pytest.approx(0.02)
    assert estimate(settings.llm, None, 1, 1).reference_model == "gpt-4.1"
