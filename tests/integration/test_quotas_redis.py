"""Per-key limits on a real Redis: replicas share one count, and a Redis that goes away fails
open onto each replica's own counters (warned at most once a minute) until it answers again."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from urllib.parse import urlsplit

import pytest
import redis

from app.quotas import Quotas
from pipelines.errors import RateLimited
from pipelines.settings import RedisSettings, Settings
from tests.support.redis_server import redis_server, redis_server_missing
from tests.support.sockets import free_port

# A missing redis-server is an install step to fix (`make services`), not a reason to skip.
assert redis_server_missing() is None, redis_server_missing()


class ManualClock:
    """The monotonic clock Quotas paces its Redis retries and warnings by, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@asynccontextmanager
async def replica(url: str, clock: ManualClock | None = None) -> AsyncIterator[Quotas]:
    """One service replica's quotas on the Redis at `url`."""
    settings = Settings(_env_file=None, redis=RedisSettings(url=url))
    quotas = Quotas.from_settings(settings, clock=clock or ManualClock())
    try:
        yield quotas
    finally:
        await quotas.close()


def quota_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "app.quotas" and r.levelno == logging.WARNING
    ]


async def test_two_replicas_on_one_redis_share_a_keys_request_count(redis_url: str) -> None:
    async with replica(redis_url) as first, replica(redis_url) as second:
        for quotas in (first, second, first, second):
            await quotas.hit_request("shared", per_minute=4)

        for quotas in (first, second):
            with pytest.raises(RateLimited, match="limit of 4 requests per minute") as refused:
                await quotas.hit_request("shared", per_minute=4)
            assert 1 <= refused.value.retry_after_s <= 60

        await second.hit_request("other", per_minute=4)
        await first.hit_request("other", per_minute=4)


async def test_two_replicas_on_one_redis_share_a_keys_token_budget(redis_url: str) -> None:
    async with replica(redis_url) as first, replica(redis_url) as second:
        await first.add_tokens("writer", 60, per_day=100)
        await second.check_tokens("writer", per_day=100)  # 40 left
        await second.add_tokens("writer", 60, per_day=100)

        for quotas in (first, second):
            with pytest.raises(RateLimited, match="100 generated tokens per day") as refused:
                await quotas.check_tokens("writer", per_day=100)
            assert 1 <= refused.value.retry_after_s <= 24 * 60 * 60

        await first.check_tokens("reader", per_day=100)


async def test_counts_live_under_namespaced_keys_that_expire(redis_url: str) -> None:
    async with replica(redis_url) as quotas:
        await quotas.hit_request("k1", per_minute=10)
        await quotas.add_tokens("k1", 5, per_day=100)

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert set(client.keys("*")) == {"ragserve:rpm:k1", "ragserve:tokens:k1"}
        assert 0 < client.ttl("ragserve:rpm:k1") <= 60
        assert 0 < client.ttl("ragserve:tokens:k1") <= 24 * 60 * 60
        assert client.get("ragserve:tokens:k1") == "5"
    finally:
        client.close()


async def test_redis_stopped_mid_test_fails_open_onto_this_replicas_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.quotas")
    with ExitStack() as server:
        url = server.enter_context(redis_server())
        async with replica(url) as quotas:
            for _ in range(3):
                await quotas.hit_request("k", per_minute=3)
            with pytest.raises(RateLimited):
                await quotas.hit_request("k", per_minute=3)
            assert await quotas.healthy()

            server.close()  # Redis stops while these quotas are in use

            assert not await quotas.healthy()
            # Served: this replica counts on its own, from an empty window...
            for _ in range(3):
                await quotas.hit_request("k", per_minute=3)
            # ... and still enforces the limit, on tokens too.
            with pytest.raises(RateLimited, match="limit of 3 requests per minute"):
                await quotas.hit_request("k", per_minute=3)
            await quotas.add_tokens("k", 50, per_day=40)
            with pytest.raises(RateLimited, match="generated tokens per day"):
                await quotas.check_tokens("k", per_day=40)
            await quotas.check_tokens("other", per_day=40)

    warnings = quota_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert f"Redis at 127.0.0.1:{urlsplit(url).port} is unreachable" in warnings[0]


async def test_a_failing_redis_is_retried_and_warned_about_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.quotas")
    clock = ManualClock()
    with ExitStack() as server:
        url = server.enter_context(redis_server())
        async with replica(url, clock) as quotas:
            await quotas.hit_request("k", per_minute=2)
            server.close()

            # A call every 6 s: each is past the retry pause, so each tries Redis again,
            # fails, and is counted in this process (2 served, then refused).
            await quotas.hit_request("k", per_minute=2)
            clock.advance(6)
            await quotas.hit_request("k", per_minute=2)
            for _ in range(7):  # up to 48 s after the first failure
                clock.advance(6)
                with pytest.raises(RateLimited):
                    await quotas.hit_request("k", per_minute=2)
            assert len(quota_warnings(caplog)) == 1

            clock.advance(13)  # 61 s after the first warning, still failing: one more
            with pytest.raises(RateLimited):
                await quotas.hit_request("k", per_minute=2)
            assert len(quota_warnings(caplog)) == 2


async def test_quotas_share_counts_again_once_redis_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.quotas")
    clock = ManualClock()
    port = free_port()
    with redis_server(port) as url:
        pass  # started and stopped: the quotas below meet a Redis that has gone away
    async with replica(url, clock) as quotas:
        await quotas.hit_request("k", per_minute=2)  # fails over to this process
        with redis_server(port):  # the same Redis back, empty as after a crash
            # Within the retry pause, still this process's counts (1 of 2 used).
            await quotas.hit_request("k", per_minute=2)
            with pytest.raises(RateLimited):
                await quotas.hit_request("k", per_minute=2)

            clock.advance(5)
            # Redis again: its window for the key is empty, and another replica shares it.
            async with replica(url) as other:
                await quotas.hit_request("k", per_minute=2)
                await other.hit_request("k", per_minute=2)
                for quotas_of_a_replica in (quotas, other):
                    with pytest.raises(RateLimited):
                        await quotas_of_a_replica.hit_request("k", per_minute=2)
                assert await quotas.healthy()

    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_redis_down_from_the_start_serves_with_this_replicas_limits() -> None:
    async with replica(f"redis://127.0.0.1:{free_port()}/0") as quotas:
        assert not await quotas.healthy()
        await quotas.hit_request("k", per_minute=1)
        with pytest.raises(RateLimited, match="retry in"):
            await quotas.hit_request("k", per_minute=1)
        await quotas.hit_request("other", per_minute=1)
