"""GET /v1/usage: answers, tokens and estimated cost per API key and UTC day (the key
database's `key_usage` totals, added to as each answer is charged: `Caller.charge`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import anyio
from fastapi import APIRouter, Query

from app.deps import ServicesDep
from app.errors import error_responses
from app.principal import BOOTSTRAP, OPEN, OPEN_USAGE_ID, Caller, CallerDep
from app.schemas.usage import KeyUsage, UsageReport
from app.services import Services
from pipelines.access import role_at_least
from pipelines.errors import DependencyUnavailable, Forbidden, InvalidInput
from pipelines.keys import UsageDay

router = APIRouter(tags=["usage"])
DEFAULT_DAYS = 30
# One report covers at most a year: an admin's is a row per key and day.
MAX_DAYS = 366
# Who the ids without a key record are.
_UNRECORDED = {BOOTSTRAP.key_id: BOOTSTRAP.name, OPEN_USAGE_ID: OPEN.name}


def _range(since: date | None, until: date | None) -> tuple[date, date]:
    """The days asked for: default the last DEFAULT_DAYS up to today (UTC)."""
    until = until or datetime.now(UTC).date()
    if since is None:
        since = until - timedelta(days=min(DEFAULT_DAYS - 1, (until - date.min).days))
    if since > until:
        raise InvalidInput(f"'since' ({since}) is after 'until' ({until})")
    if (until - since).days + 1 > MAX_DAYS:
        raise InvalidInput(f"at most {MAX_DAYS} days per report: narrow 'since' or 'until'")
    return since, until


def _whose(caller: Caller, key_id: str | None) -> str | None:
    """The one key to report (None: every key, for an admin). A key sees its own usage;
    another's is 403 unless the caller is an admin."""
    if role_at_least(caller.role, "admin"):
        return key_id
    if key_id is not None and key_id != caller.usage_id:
        raise Forbidden("a key sees its own usage only: another key's needs the role 'admin'")
    return caller.usage_id


def _report(services: Services, since: date, until: date, key_id: str | None) -> list[KeyUsage]:
    """Blocking (the key database): called in a worker thread."""
    keys = services.keys
    if keys is None:
        raise DependencyUnavailable("this service runs without a key database")
    rows = keys.usage(since, until, key_id=key_id)
    names = _UNRECORDED | {k.id: k.name for k in keys.list()}
    by_key: dict[str, list[UsageDay]] = {}
    if key_id is not None:
        by_key[key_id] = []  # a key asked for by id is in the report, with zeros if idle
    for row in rows:
        by_key.setdefault(row.key_id, []).append(row)
    return [KeyUsage.of(k, names.get(k), days) for k, days in by_key.items()]


@router.get(
    "/usage",
    response_model=UsageReport,
    responses=error_responses(
        403,
        422,
        503,
        e403="Another key's usage (`key_id`) asked for by a key that is not an admin",
        e422="Invalid `since`/`until` (ISO dates; `since` not after `until`, at most 366 days)",
        e503="The key database is unavailable",
    ),
    summary="Answers, tokens and estimated cost per key and UTC day",
    description="A key sees its own totals; an admin sees every key's, or one with "
    "`key_id`. `since` and `until` are UTC days, both included (default: the last 30 days). "
    "On a server without keys, answers count under the key id `open`; the bootstrap key "
    "RAG_SERVER__API_KEY under `bootstrap`. Costs are estimates at RAG_LLM__PRICES as they "
    "were when each answer was charged; `reference_cost_usd` at the reference model's list "
    "price.",
)
async def usage_report(
    caller: CallerDep,
    services: ServicesDep,
    since: Annotated[date | None, Query(description="First UTC day (YYYY-MM-DD)")] = None,
    until: Annotated[date | None, Query(description="Last UTC day (default: today)")] = None,
    key_id: Annotated[
        str | None, Query(max_length=64, description="One key's id (admin; a key: its own)")
    ] = None,
) -> UsageReport:
    first, last = _range(since, until)
    whose = _whose(caller, key_id)
    keys = await anyio.to_thread.run_sync(_report, services, first, last, whose)
    llm = services.settings.llm
    return UsageReport(
        since=first,
        until=last,
        reference_model=llm.reference_model if llm.reference_price is not None else None,
        keys=keys,
    )
