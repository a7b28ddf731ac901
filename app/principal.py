"""Who is calling and what they may do: the request's API key as a `Principal`, and the
`Caller` a route asks before it reads or writes (role, collection scope, token budget).

`app/auth.py` resolves the principal from the `Authorization` header before the body is read
and leaves it in the request's state; routes take a `CallerDep`. The collection scope and the
document groups travel on, as an `Access`, into every store read (`pipelines/access.py`), so
the collection and the access list are part of the vector query itself.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import Depends, Request

from pipelines.access import FULL_ACCESS, Access, Role, role_at_least
from pipelines.chain import Answer
from pipelines.errors import Forbidden, RagError, Unauthorized
from pipelines.keys import ApiKey, KeyStore
from pipelines.pricing import Cost, estimate
from pipelines.settings import Settings

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

# Without keys, the key database is asked again at most this often whether one now exists
# (a `rag keys create` in another process closes an open server within this time).
_RECHECK_S = 1.0
# A server without keys counts its answers' usage under this id (GET /v1/usage shows it).
OPEN_USAGE_ID = "open"
# What a role may do, in the words a 403 uses.
_ROLE_NEEDED_FOR = {
    "read": "search and ask",
    "write": "upload or delete documents",
    "admin": "manage API keys and collections",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a key from the database, the bootstrap key, or nobody (a server without
    keys). `key_id` and `name` go into the audit log; the secret never does."""

    key_id: str
    name: str
    role: Role
    access: Access
    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    authenticated: bool = True

    @classmethod
    def of_key(cls, key: ApiKey, settings: Settings) -> Principal:
        return cls(
            key_id=key.id,
            name=key.name,
            role=key.role,
            access=key.access(),
            requests_per_minute=key.requests_per_minute or settings.limits.requests_per_minute,
            tokens_per_day=key.tokens_per_day or settings.limits.tokens_per_day,
        )

    @property
    def groups(self) -> tuple[str, ...] | None:
        return None if self.access.groups is None else tuple(sorted(self.access.groups))

    @property
    def collections(self) -> tuple[str, ...]:
        return ("*",) if self.access.collections is None else tuple(sorted(self.access.collections))


# RAG_SERVER__API_KEY: an admin over everything, without limits.
BOOTSTRAP = Principal(
    key_id="bootstrap", name="RAG_SERVER__API_KEY", role="admin", access=FULL_ACCESS
)
# No key configured anywhere (loopback, or RAG_SERVER__AUTH=off): everyone may do everything.
OPEN = Principal(
    key_id="-", name="anonymous", role="admin", access=FULL_ACCESS, authenticated=False
)


class KeyGate:
    """Decides whether a request needs a key and whose it is. Keys are never deleted (only
    revoked), so once one has existed the server stays closed."""

    def __init__(self) -> None:
        self._keys_seen = False
        self._checked_at = -_RECHECK_S

    def key_created(self) -> None:
        self._keys_seen = True

    def _required(self, settings: Settings, keys: KeyStore | None) -> bool:
        server = settings.server
        if server.auth == "off":
            return False
        if server.auth == "on" or server.api_key is not None or self._keys_seen:
            return True
        if keys is None:
            return False
        now = time.monotonic()
        if now - self._checked_at >= _RECHECK_S:
            self._checked_at = now
            self._keys_seen = keys.has_keys()
        return self._keys_seen

    def principal(self, settings: Settings, keys: KeyStore | None, token: str | None) -> Principal:
        """Who sends `token`; raises Unauthorized saying what was wrong. Blocking (the key
        database): called in a worker thread."""
        if not self._required(settings, keys):
            return OPEN  # SDKs send some key even to an open server: it is not checked
        if token is None:
            raise Unauthorized(
                "missing API key: send the header 'Authorization: Bearer <key>' "
                "(create one with `rag keys create`)"
            )
        if not token:
            raise Unauthorized(
                "malformed Authorization header: expected 'Authorization: Bearer <key>'"
            )
        bootstrap = settings.server.api_key
        if bootstrap is not None and hmac.compare_digest(
            token.encode(), bootstrap.get_secret_value().encode()
        ):
            return BOOTSTRAP
        if keys is None:
            raise Unauthorized("unknown API key")
        key = keys.authenticate(token)
        keys.touch(key.id)
        return Principal.of_key(key, settings)


class Caller:
    """The request's principal, as a route uses it: each check raises 403 (role or scope)
    and notes the collection for the audit line; `charge` counts what an answer used."""

    def __init__(self, principal: Principal, request: Request, services: Services) -> None:
        self.principal = principal
        self._request = request
        self._services = services
        self._quotas = services.quotas

    @property
    def usage_id(self) -> str:
        """Whose usage totals this caller's answers add to: its key's id, `bootstrap`, or
        `open` on a server without keys."""
        return self.principal.key_id if self.principal.authenticated else OPEN_USAGE_ID

    @property
    def role(self) -> Role:
        return self.principal.role

    @property
    def access(self) -> Access:
        """What the caller reads, for a route over collections it already filtered."""
        return self.principal.access

    def _note(self, collection: str) -> None:
        self._request.state.audit_collection = collection

    def require(self, role: Role) -> None:
        if not role_at_least(self.principal.role, role):
            raise Forbidden(
                f"this API key's role '{self.principal.role}' may not "
                f"{_ROLE_NEEDED_FOR[role]}: that needs the role '{role}'"
            )

    def read(self, collection: str) -> Access:
        """The access to pass to the store for reading `collection` (403 when out of scope)."""
        self._note(collection)
        self.principal.access.check(collection)
        return self.principal.access

    def write(self, collection: str) -> Access:
        """As `read`, for uploads and deletes: the role must be `write` or above."""
        self._note(collection)
        self.require("write")
        self.principal.access.check(collection)
        return self.principal.access

    def visible(self, collections: list[str]) -> list[str]:
        return self.principal.access.visible(collections)

    async def before_generation(self) -> None:
        """429 when the key's generated tokens for the day are spent."""
        if self._quotas is not None:
            await self._quotas.check_tokens(self.principal.key_id, self.principal.tokens_per_day)

    async def charge(self, answer: Answer, model: str | None = None) -> Cost:
        """Counts what an answer used, also when it was cut short: the key's generated tokens
        for the day, its usage totals in the key database, the cost counters and the
        request's log line. `model` is the one the request asked for (None: the default).

        Shielded from cancellation: a stream whose client left still generated its tokens,
        and the key database's write (a worker thread) finishes either way."""
        usage = answer.usage
        llm = self._services.settings.llm
        cost = estimate(llm, model, usage.prompt_tokens, usage.completion_tokens)
        state = self._request.state
        state.audit_usage = (usage.prompt_tokens, usage.completion_tokens)
        state.audit_cost = cost
        self._services.telemetry.cost(cost.model, cost.usd, cost.reference_usd)
        with anyio.CancelScope(shield=True):
            if self._quotas is not None and self.principal.tokens_per_day is not None:
                await self._quotas.add_tokens(
                    self.principal.key_id, usage.completion_tokens, self.principal.tokens_per_day
                )
            await self._record_usage(usage.prompt_tokens, usage.completion_tokens, cost)
        return cost

    def charger(self, model: str | None) -> Callable[[Answer], Awaitable[None]]:
        """`charge` at `model`, as a stream's `finish` (run once, when the answer ends)."""

        async def finish(answer: Answer) -> None:
            await self.charge(answer, model)

        return finish

    async def _record_usage(self, prompt_tokens: int, completion_tokens: int, cost: Cost) -> None:
        keys = self._services.keys
        if keys is None:  # no key database (tests, an embedded use): nothing to total
            return
        record = partial(
            keys.record_usage,
            self.usage_id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost.usd,
            reference_cost_usd=cost.reference_usd or 0.0,
        )
        rid = getattr(self._request.state, "request_id", "-")
        # The answer has been given: its bookkeeping failing is logged, not made its error.
        try:
            await anyio.to_thread.run_sync(record)
        except RagError as exc:
            log.warning("request %s: usage of key %s not recorded: %s", rid, self.usage_id, exc)
        except Exception:
            log.exception("request %s: usage of key %s not recorded", rid, self.usage_id)


async def get_caller(request: Request) -> Caller:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        # Every /v1 request passes app/auth.py first; one that did not is refused, not served.
        raise Unauthorized("this request was not authenticated")
    return Caller(principal, request, request.app.state.services)


CallerDep = Annotated[Caller, Depends(get_caller)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(settings: Settings, host: str, has_keys: bool) -> str | None:
    """Why the service must not start on `host` as configured, or None.

    Open (no key anywhere) is allowed on loopback only, unless RAG_SERVER__AUTH=off says so."""
    if settings.server.auth == "off" or settings.server.api_key is not None or has_keys:
        return None
    if settings.server.auth == "auto" and is_loopback(host):
        return None
    where = f"on {host}" if not is_loopback(host) else "with RAG_SERVER__AUTH=on"
    return (
        f"refusing to serve {where} without an API key: anyone who reaches it could read, "
        "upload and delete every document. Create a key first "
        "(`rag keys create --name admin --role admin`) or set RAG_SERVER__API_KEY; "
        "to run without authentication on purpose, set RAG_SERVER__AUTH=off"
    )
