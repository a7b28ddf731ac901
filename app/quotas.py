"""Per-API-key limits: requests per minute and generated tokens per day, counted with `limits`.

`Quotas.from_settings` counts in this process (limits' async memory storage) unless
`redis.url` (`RAG_REDIS__URL`) is set; then every replica counts in that one Redis, through
limits' async storage over redis-py's asyncio client, so a round trip never blocks the event
loop. A key over a limit gets `RateLimited` (429) with `Retry-After`: the whole seconds until
its window frees room again.

Redis unreachable: **fail open, onto this process's counters.** Limits here are a fairness and
cost control, not an access boundary (keys and scopes are checked elsewhere, and a Redis
outage changes nothing about them), so an outage of the limit store must not take the query
service down with it: that is also what gateways do by default (Envoy's ratelimit filter,
`failure_mode_deny: false`; Kong's rate limiting, `fault_tolerant: true`). Unlike a plain
fail-open, each replica keeps enforcing every limit on its own in-process counters meanwhile
(flask-limiter's in-memory fallback), so a key gets at most its limit per replica instead of
no limit at all. A warning is logged at most once a minute while Redis fails; Redis is tried
again a few seconds after each failure, and its counters are used again as soon as it
answers (logged once). Short socket timeouts keep a black-holed Redis from stalling requests.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pipelines.errors import ConfigError, RateLimited
from pipelines.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

KEY_PREFIX = "ragserve"  # Redis keys: ragserve:rpm:<key id>, ragserve:tokens:<key id>
# A limit check sits on every request's path: a Redis that does not answer within this is
# treated as down rather than waited for.
REDIS_TIMEOUT_S = 0.5
# After a failure, this process counts on its own for this long before trying Redis again, so
# an outage costs one timeout per few seconds, not one per request.
RETRY_REDIS_AFTER_S = 5.0
WARN_EVERY_S = 60.0
MINUTE_S = 60
DAY_S = 24 * 60 * 60


class _KeyedByIdentity:
    """A limit item whose storage key names the API key only: `<namespace>:<key id>`.

    limits' own key also names the amount, so editing a key's limit would start it on a fresh,
    empty window (a spent daily budget raised from 1M to 2M tokens would allow 2M more, not
    1M). Keyed by identity, the usage so far is kept and checked against the new limit."""

    __slots__ = ()
    namespace: str

    def key_for(self, *identifiers: bytes | str | int | float) -> str:
        return ":".join([self.namespace, *(str(part) for part in identifiers)])


class _RequestsPerMinute(_KeyedByIdentity, RateLimitItemPerMinute):
    pass


class _TokensPerDay(_KeyedByIdentity, RateLimitItemPerDay):
    pass


@dataclass(frozen=True)
class _Counters:
    """One storage and the strategy for each limit over it.

    Requests: the **moving window**. It keeps the time of each of the last N requests, so it
    counts exactly N in any 60 s (a fixed window lets 2N through around its boundary) and
    `Retry-After` is exact: when the oldest of those N leaves the window. On Redis one Lua
    script checks and records a request atomically and trims the list to N entries, so two
    replicas cannot both take the last place. A refused request is not recorded: a client
    retrying early does not push its own `Retry-After` further out. (Entry times come from
    each replica's clock; NTP's skew is negligible against a minute.)

    Tokens: a **fixed window**. The moving window stores one entry per unit (100 000 tokens a
    day would be 100 000 list entries) and, like the sliding-window counter, refuses a cost
    that would cross the limit, so neither can record an answer already generated past the
    budget; the sliding counter's reset time is an estimate as well. The fixed window is one
    counter per key, incremented atomically with its expiry (one Lua script on Redis, so
    replicas add up exactly), living 24 h from the key's first generation in it: `Retry-After`
    is its remaining lifetime, exactly when the budget refills, on Redis's own clock. The
    price, up to twice the budget across the boundary of two windows, is acceptable for a
    daily cost budget.
    """

    storage: Storage
    requests: MovingWindowRateLimiter
    tokens: FixedWindowRateLimiter

    @classmethod
    def over(cls, storage: Storage) -> _Counters:
        return cls(storage, MovingWindowRateLimiter(storage), FixedWindowRateLimiter(storage))


class Quotas:
    """Each API key's request rate and daily generated tokens, against the limits it is given.

    `shared` is where the counts live; `fallback` (given with a Redis `shared`) counts in this
    process while `shared` fails. `clock` (monotonic seconds) paces only the retries of a
    failed `shared` and the warnings; the windows themselves run on limits' wall clock."""

    def __init__(
        self,
        shared: Storage,
        *,
        fallback: Storage | None = None,
        where: str = "in-process storage",
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._shared = _Counters.over(shared)
        self._fallback = _Counters.over(fallback) if fallback is not None else None
        self._where = where
        self._clock = clock
        self._on_close = on_close
        self._retry_shared_at: float | None = None  # set while `shared` is failing
        self._warned_at: float | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic
    ) -> Quotas:
        """In-process counters, or one Redis shared by every replica when `redis.url` is set."""
        url = settings.redis.url
        if url is None:
            return cls(MemoryStorage(), clock=clock)
        try:
            pool = ConnectionPool.from_url(
                url,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
                # One immediate retry covers a pooled connection the server dropped (a restart,
                # an idle timeout); more would only delay the fallback.
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:  # the URL itself is not echoed: it may hold a password
            raise ConfigError(f"redis.url (RAG_REDIS__URL) is not a Redis URL: {exc}") from exc
        # limits documents `connection_pool` among the client options: the pool is ours to
        # close, as limits' storage has no close of its own.
        options: dict[str, Any] = {"connection_pool": pool}
        shared = RedisStorage(
            _limits_uri(url),
            wrap_exceptions=True,
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            **options,
        )
        return cls(
            shared,
            fallback=MemoryStorage(),
            where=f"Redis at {_redis_address(url)}",
            clock=clock,
            on_close=pool.aclose,
        )

    async def hit_request(self, key_id: str, per_minute: int | None) -> None:
        """Count one request of `key_id`; `RateLimited` if it is over `per_minute` (None:
        unlimited, nothing counted)."""
        if per_minute is None:
            return
        item = _RequestsPerMinute(per_minute, namespace="rpm")

        async def hit(counters: _Counters) -> int | None:
            if await counters.requests.hit(item, key_id):
                return None
            stats = await counters.requests.get_window_stats(item, key_id)
            return _seconds_until(stats.reset_time, MINUTE_S)

        wait_s = await self._counted(hit)
        if wait_s is not None:
            raise RateLimited(
                f"API key '{key_id}' is over its limit of {_plural(per_minute, 'request')} "
                f"per minute; retry in {wait_s} s",
                wait_s,
            )

    async def check_tokens(self, key_id: str, per_day: int | None) -> None:
        """Before a generation: `RateLimited` if `key_id` has already spent its `per_day`
        generated tokens (None: unlimited)."""
        if per_day is None:
            return
        item = _TokensPerDay(per_day, namespace="tokens")

        async def check(counters: _Counters) -> int | None:
            if await counters.tokens.test(item, key_id):
                return None
            stats = await counters.tokens.get_window_stats(item, key_id)
            return _seconds_until(stats.reset_time, DAY_S)

        wait_s = await self._counted(check)
        if wait_s is not None:
            raise RateLimited(
                f"API key '{key_id}' is over its limit of "
                f"{_plural(per_day, 'generated token')} per day; retry in {wait_s} s",
                wait_s,
                limit="tokens",
            )

    async def add_tokens(self, key_id: str, tokens: int, per_day: int | None) -> None:
        """After a generation: count the `tokens` it produced. Counted in full even past the
        budget (the answer was already generated): the next `check_tokens` refuses."""
        if per_day is None or tokens <= 0:
            return
        item = _TokensPerDay(per_day, namespace="tokens")

        async def add(counters: _Counters) -> None:
            # The fixed window's hit always increments; its "within the limit" answer is moot.
            await counters.tokens.hit(item, key_id, cost=tokens)

        await self._counted(add)

    async def healthy(self) -> bool:
        """Whether the shared storage answers (always, in-process): for the readiness check."""
        try:
            return bool(await self._shared.storage.check())
        except StorageError:
            return False

    async def close(self) -> None:
        """Close the Redis connections (nothing to close in-process); idempotent."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            await on_close()

    async def _counted(self, operation: Callable[[_Counters], Awaitable[T]]) -> T:
        """Run `operation` on the shared counters, or on this process's while they fail."""
        if self._fallback is None:
            return await operation(self._shared)
        now = self._clock()
        if self._retry_shared_at is None or now >= self._retry_shared_at:
            try:
                result = await operation(self._shared)
            except StorageError as exc:
                self._shared_failed(exc.storage_error, now)
            else:
                if self._retry_shared_at is not None:
                    self._retry_shared_at = None
                    log.info("%s answers again: per-key limits are shared again", self._where)
                return result
        return await operation(self._fallback)

    def _shared_failed(self, error: Exception, now: float) -> None:
        self._retry_shared_at = now + RETRY_REDIS_AFTER_S
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "%s is unreachable (%s: %s): each replica counts per-key limits on its own "
                "until it answers (tried again every %.0f s)",
                self._where,
                type(error).__name__,
                error,
                RETRY_REDIS_AFTER_S,
            )


def _seconds_until(reset_time: float, window_s: int) -> int:
    """Whole seconds from now to `reset_time` (limits' wall-clock time), within 1..window."""
    return min(window_s, max(1, math.ceil(reset_time - time.time())))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _limits_uri(url: str) -> str:
    """limits' spelling of a redis-py URL (it picks its client by the scheme)."""
    scheme = urlsplit(url).scheme
    return f"async+redis+{url}" if scheme == "unix" else f"async+{url}"


def _redis_address(url: str) -> str:
    """Where the Redis of `url` is, for logs: host and port (or socket path), no password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"
