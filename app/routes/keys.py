"""API keys: POST/GET/DELETE /v1/keys (admin), and GET /v1/me (any key: who am I)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query

from app.deps import ServicesDep
from app.errors import error_responses
from app.principal import Caller, CallerDep
from app.schemas.keys import KeyCreate, KeyCreated, KeyList, KeyOut, Me
from app.services import Services
from pipelines.access import role_at_least
from pipelines.errors import DependencyUnavailable
from pipelines.keys import KeyStore

router = APIRouter(tags=["keys"])
_ADMIN_ERRORS = error_responses(403, e403="The key is not an admin key")


def _admin_keys(caller: Caller, services: Services) -> KeyStore:
    """The key database, for an admin caller only (403 otherwise)."""
    caller.require("admin")
    if services.keys is None:
        raise DependencyUnavailable("this service runs without a key database")
    return services.keys


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyCreated,
    responses={**_ADMIN_ERRORS, **error_responses(422)},
    summary="Create an API key (admin); the key is in the answer, once",
)
async def create_key(body: KeyCreate, caller: CallerDep, services: ServicesDep) -> KeyCreated:
    keys = _admin_keys(caller, services)

    def create() -> tuple[KeyOut, str]:
        record, token = keys.create(
            name=body.name,
            role=body.role,
            collections=body.collections,
            groups=body.groups,
            expires_at=body.expires_at,
            requests_per_minute=body.requests_per_minute,
            tokens_per_day=body.tokens_per_day,
        )
        return KeyOut.of(record), token

    out, token = await anyio.to_thread.run_sync(create)
    services.gate.key_created()
    return KeyCreated(key=out, token=token)


@router.get(
    "/keys",
    response_model=KeyList,
    responses=_ADMIN_ERRORS,
    summary="List API keys (admin): ids, names, scopes, status; never the keys themselves",
)
async def list_keys(
    caller: CallerDep,
    services: ServicesDep,
    include_revoked: Annotated[bool, Query(description="Also revoked keys")] = False,
) -> KeyList:
    keys = _admin_keys(caller, services)
    rows = await anyio.to_thread.run_sync(lambda: keys.list(include_revoked=include_revoked))
    return KeyList(keys=[KeyOut.of(k) for k in rows])


@router.get(
    "/keys/{key_id}",
    response_model=KeyOut,
    responses={**_ADMIN_ERRORS, **error_responses(404, e404="No key has this id")},
    summary="One API key (admin)",
)
async def get_key(key_id: str, caller: CallerDep, services: ServicesDep) -> KeyOut:
    keys = _admin_keys(caller, services)
    return KeyOut.of(await anyio.to_thread.run_sync(keys.get, key_id))


@router.delete(
    "/keys/{key_id}",
    response_model=KeyOut,
    responses={**_ADMIN_ERRORS, **error_responses(404, e404="No key has this id")},
    summary="Revoke an API key (admin): refused from the next request on",
)
async def revoke_key(key_id: str, caller: CallerDep, services: ServicesDep) -> KeyOut:
    keys = _admin_keys(caller, services)
    return KeyOut.of(await anyio.to_thread.run_sync(keys.revoke, key_id))


@router.get("/me", response_model=Me, summary="The calling key: name, role, scopes")
async def me(caller: CallerDep) -> Me:
    p = caller.principal
    return Me(
        auth=p.authenticated,
        id=p.key_id,
        name=p.name,
        role=p.role,
        collections=list(p.collections),
        groups=None if p.groups is None else list(p.groups),
        can_upload=role_at_least(p.role, "write"),
    )
