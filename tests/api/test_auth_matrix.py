"""The auth matrix, generated from the app's own route table: every /v1 route × {no key,
malformed header, unknown, revoked, expired, wrong role, out-of-scope collection, valid}.

A route added to the app without a row in `ROUTES` fails `test_every_v1_route_is_in_the_matrix`,
so no new route can skip the question of who may call it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from app.main import create_app
from pipelines.access import Role
from pipelines.core import Core
from tests.support.tenancy import Tenants, tenants


@dataclass(frozen=True)
class Row:
    """How to call one route on a collection, and the role it needs. `scoped`: the route
    reads or writes a collection (so an out-of-scope collection is a case)."""

    role: Role
    scoped: bool = True
    json: Callable[[str], Any] | None = None
    files: bool = False


def _chat(c: str) -> dict[str, Any]:
    return {"model": f"rag:{c}", "messages": [{"role": "user", "content": "espresso?"}]}


ROUTES: dict[tuple[str, str], Row] = {
    ("POST", "/v1/search"): Row("read", json=lambda c: {"query": "espresso", "collection": c}),
    ("POST", "/v1/ask"): Row("read", json=lambda c: {"question": "espresso?", "collection": c}),
    ("POST", "/v1/ask/stream"): Row(
        "read", json=lambda c: {"question": "espresso?", "collection": c}
    ),
    ("DELETE", "/v1/ask/stream/{stream_id}"): Row("read", scoped=False),
    ("POST", "/v1/chat/completions"): Row("read", json=_chat),
    ("GET", "/v1/models"): Row("read", scoped=False),
    ("GET", "/v1/models/{model}"): Row("read", scoped=False),
    ("GET", "/v1/me"): Row("read", scoped=False),
    ("GET", "/v1/collections"): Row("read", scoped=False),
    # The valid call drops `alpha`: safe, it is the last call and each case has its own store.
    ("DELETE", "/v1/collections/{collection}"): Row("admin"),
    ("GET", "/v1/collections/{collection}/documents"): Row("read"),
    ("POST", "/v1/collections/{collection}/documents"): Row("write", files=True),
    ("DELETE", "/v1/collections/{collection}/documents/{doc_id}"): Row("write"),
    ("GET", "/v1/collections/{collection}/documents/{doc_id}/file"): Row("read"),
    ("POST", "/v1/keys"): Row(
        "admin", scoped=False, json=lambda c: {"name": "new", "collections": ["alpha"]}
    ),
    ("GET", "/v1/keys"): Row("admin", scoped=False),
    ("GET", "/v1/keys/{key_id}"): Row("admin", scoped=False),
    ("DELETE", "/v1/keys/{key_id}"): Row("admin", scoped=False),
    # Any key (its own totals; an admin's: every key's).
    ("GET", "/v1/usage"): Row("read", scoped=False),
}
# Who holds too low a role for each role, on collection `alpha`.
LOWER = {"write": "alpha_read", "admin": "alpha_write"}
HOLDER = {"read": "alpha_read", "write": "alpha_write", "admin": "admin"}


def v1_routes() -> set[tuple[str, str]]:
    app = create_app()
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/v1")
        for method in route.methods
    }


def test_every_v1_route_is_in_the_matrix() -> None:
    missing = v1_routes() - set(ROUTES)
    assert not missing, f"add these routes to the auth matrix: {sorted(missing)}"
    assert not set(ROUTES) - v1_routes(), "the matrix names routes the app no longer has"


@pytest.fixture
async def t(core: Core, tmp_path: Path) -> AsyncIterator[Tenants]:
    async with tenants(core, tmp_path / "docs") as built:
        yield built


async def call(
    t: Tenants, method: str, path: str, collection: str, headers: dict[str, str]
) -> httpx.Response:
    row = ROUTES[(method, path)]
    url = path.format(
        collection=collection,
        doc_id="0" * 32,
        key_id=t.ids["revoked"],
        stream_id="0" * 16,
        model="rag:alpha",
    )
    kwargs: dict[str, Any] = {"headers": headers}
    if row.json is not None:
        kwargs["json"] = row.json(collection)
    if row.files:
        kwargs["files"] = [("files", ("note.md", b"# Note\n\nA new note.", "text/markdown"))]
    return await t.client.request(method, url, **kwargs)


# Shaped like a key (prefix, id, secret) but never issued.
UNKNOWN = "rag_" + "0" * 12 + "_" + "x" * 43
CASES = ["no key", "malformed", "unknown", "revoked", "expired", "wrong role", "out of scope"]


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
async def test_auth_matrix(t: Tenants, method: str, path: str) -> None:
    row = ROUTES[(method, path)]
    headers: dict[str, dict[str, str] | None] = {
        "no key": {},
        "malformed": {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"},
        "unknown": {"Authorization": f"Bearer {UNKNOWN}"},
        "revoked": t.headers("revoked"),
        "expired": t.headers("expired"),
        "wrong role": t.headers(LOWER[row.role]) if row.role in LOWER else None,
        "out of scope": t.headers(HOLDER[row.role]) if row.scoped and row.role != "admin" else None,
    }
    seen = {}
    for case in CASES:
        h = headers[case]
        if h is None:  # the case does not apply to this route (no lower role, no collection)
            continue
        r = await call(t, method, path, "beta" if case == "out of scope" else "alpha", h)
        seen[case] = r.status_code
        expected = 403 if case in ("wrong role", "out of scope") else 401
        assert r.status_code == expected, (case, r.text)
        error = r.json()["error"]
        assert error["code"] == ("forbidden" if expected == 403 else "unauthorized")
        assert error["request_id"] == r.headers["x-request-id"]
    r = await call(t, method, path, "alpha", t.headers(HOLDER[row.role]))
    assert r.status_code < 400 or r.json()["error"]["code"] in (
        "document_not_found",
        "key_not_found",
        "stream_not_found",
    ), r.text
    assert seen["no key"] == 401


async def test_401_messages_say_which(t: Tenants) -> None:
    async def message(headers: dict[str, str]) -> str:
        r = await t.client.post("/v1/search", json={"query": "x"}, headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        return str(r.json()["error"]["message"])

    assert "missing" in await message({})
    assert "malformed" in await message({"Authorization": "Bearer"})
    assert "unknown" in await message({"Authorization": f"Bearer {UNKNOWN}"})
    assert "malformed" in await message({"Authorization": "Bearer sk-not-ours"})
    assert "revoked" in await message(t.headers("revoked"))
    assert "expired" in await message(t.headers("expired"))
    for token in t.tokens.values():  # no message ever echoes a key
        for headers in (t.headers("revoked"), t.headers("expired")):
            assert token not in await message(headers)


async def test_403_messages_say_which(t: Tenants) -> None:
    r = await t.client.post(
        "/v1/search", json={"query": "x", "collection": "beta"}, headers=t.headers("alpha_read")
    )
    assert r.status_code == 403
    assert "collection 'beta'" in r.json()["error"]["message"]
    r = await t.client.get("/v1/keys", headers=t.headers("alpha_write"))
    assert r.status_code == 403
    assert "role 'write'" in r.json()["error"]["message"]
    assert "'admin'" in r.json()["error"]["message"]
