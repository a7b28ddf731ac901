"""Per-key limits counted in this process: the N+1-th request and a spent token budget are 429s
with Retry-After, each key counted apart, no limit counting nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.quotas import Quotas
from pipelines.errors import ConfigError, RateLimited
from pipelines.settings import RedisSettings, Settings


@pytest.fixture
async def quotas() -> AsyncIterator[Quotas]:
    # No Redis, whatever the environment says: these count in this process.
    built = Quotas.from_settings(Settings(_env_file=None, redis=RedisSettings(url=None)))
    try:
        yield built
    finally:
        await built.close()


async def test_request_over_the_per_minute_limit_is_refused_with_retry_after(
    quotas: Quotas,
) -> None:
    for _ in range(3):
        await quotas.hit_request("abc123", per_minute=3)

    with pytest.raises(RateLimited) as refused:
        await quotas.hit_request("abc123", per_minute=3)

    error = refused.value
    assert error.status == 429 and error.retryable
    assert 1 <= error.retry_after_s <= 60
    assert error.response_headers() == {"Retry-After": str(error.retry_after_s)}
    assert error.message == (
        "API key 'abc123' is over its limit of 3 requests per minute; "
        f"retry in {error.retry_after_s} s"
    )


async def test_refused_requests_stay_refused_within_the_window(quotas: Quotas) -> None:
    await quotas.hit_request("one-a-minute", per_minute=1)
    for _ in range(3):
        with pytest.raises(RateLimited, match="limit of 1 request per minute"):
            await quotas.hit_request("one-a-minute", per_minute=1)


async def test_a_key_over_its_request_limit_leaves_other_keys_unaffected(
    quotas: Quotas,
) -> None:
    for _ in range(2):
        await quotas.hit_request("busy", per_minute=2)
    with pytest.raises(RateLimited):
        await quotas.hit_request("busy", per_minute=2)

    for _ in range(2):
        await quotas.hit_request("quiet", per_minute=2)


async def test_no_request_limit_counts_nothing(quotas: Quotas) -> None:
    for _ in range(200):
        await quotas.hit_request("unlimited", per_minute=None)

    # None of those was counted: a limit given now starts from an empty window.
    for _ in range(2):
        await quotas.hit_request("unlimited", per_minute=2)
    with pytest.raises(RateLimited):
        await quotas.hit_request("unlimited", per_minute=2)


async def test_changing_a_keys_request_limit_keeps_its_usage(quotas: Quotas) -> None:
    for _ in range(3):
        await quotas.hit_request("edited", per_minute=3)

    # Raised to 5: two more fit, not five (the three already made still count).
    for _ in range(2):
        await quotas.hit_request("edited", per_minute=5)
    with pytest.raises(RateLimited, match="limit of 5 requests per minute"):
        await quotas.hit_request("edited", per_minute=5)
    # Lowered to 2: over it at once.
    with pytest.raises(RateLimited, match="limit of 2 requests per minute"):
        await quotas.hit_request("edited", per_minute=2)


async def test_token_budget_spent_past_its_limit_refuses_the_next_generation(
    quotas: Quotas,
) -> None:
    await quotas.check_tokens("writer", per_day=100)
    await quotas.add_tokens("writer", 60, per_day=100)
    await quotas.check_tokens("writer", per_day=100)  # 40 left: the next answer may start
    await quotas.add_tokens("writer", 90, per_day=100)  # overshoots once, counted in full

    with pytest.raises(RateLimited) as refused:
        await quotas.check_tokens("writer", per_day=100)

    error = refused.value
    assert 1 <= error.retry_after_s <= 24 * 60 * 60
    assert error.response_headers() == {"Retry-After": str(error.retry_after_s)}
    assert error.limit == "tokens"  # OpenAI's 429 type for a token budget
    assert error.message == (
        "API key 'writer' is over its limit of 100 generated tokens per day; "
        f"retry in {error.retry_after_s} s"
    )


async def test_token_budget_spent_exactly_refuses_the_next_generation(quotas: Quotas) -> None:
    await quotas.add_tokens("exact", 100, per_day=100)
    with pytest.raises(RateLimited):
        await quotas.check_tokens("exact", per_day=100)


async def test_a_key_over_its_token_budget_leaves_other_keys_unaffected(
    quotas: Quotas,
) -> None:
    await quotas.add_tokens("spender", 500, per_day=100)
    with pytest.raises(RateLimited):
        await quotas.check_tokens("spender", per_day=100)

    await quotas.check_tokens("saver", per_day=100)
    await quotas.add_tokens("saver", 99, per_day=100)
    await quotas.check_tokens("saver", per_day=100)


async def test_token_and_request_limits_are_counted_apart(quotas: Quotas) -> None:
    await quotas.add_tokens("both", 1_000, per_day=10)
    with pytest.raises(RateLimited, match="generated tokens per day"):
        await quotas.check_tokens("both", per_day=10)

    await quotas.hit_request("both", per_minute=1)  # requests: a window of their own


async def test_no_token_budget_counts_nothing(quotas: Quotas) -> None:
    await quotas.add_tokens("open", 10_000, per_day=None)
    await quotas.check_tokens("open", per_day=None)

    # Nothing was counted while it had no budget.
    await quotas.check_tokens("open", per_day=10)
    await quotas.add_tokens("open", 0, per_day=10)
    await quotas.check_tokens("open", per_day=10)


async def test_in_process_quotas_are_healthy_and_close_twice(quotas: Quotas) -> None:
    assert await quotas.healthy()
    await quotas.close()
    await quotas.close()


def test_a_redis_url_of_another_scheme_is_refused_without_echoing_it() -> None:
    settings = Settings(_env_file=None, redis=RedisSettings(url="http://ops:hunter2@cache:6379"))
    with pytest.raises(ConfigError, match="RAG_REDIS__URL") as refused:
        Quotas.from_settings(settings)
    assert "hunter2" not in refused.value.message
