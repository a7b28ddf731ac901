"""DELETE /v1/collections/{collection}: an admin drops a collection (204, then 404, gone from
the listing, its search a 404); a read or write key is refused (403) and the collection stays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipelines.core import Core
from tests.support.tenancy import Tenants, tenants


@pytest.fixture
async def t(core: Core, tmp_path: Path) -> AsyncIterator[Tenants]:
    async with tenants(core, tmp_path / "docs") as built:
        yield built


async def listed(t: Tenants) -> list[str]:
    r = await t.client.get("/v1/collections", headers=t.headers("admin"))
    assert r.status_code == 200, r.text
    return [c["name"] for c in r.json()["collections"]]


async def test_admin_deletes_a_collection_then_it_is_gone(t: Tenants) -> None:
    assert "alpha" in await listed(t)
    r = await t.client.delete("/v1/collections/alpha", headers=t.headers("admin"))
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert await listed(t) == ["beta"]
    again = await t.client.delete("/v1/collections/alpha", headers=t.headers("admin"))
    assert again.status_code == 404, again.text
    assert again.json()["error"]["code"] == "collection_not_found"
    search = await t.client.post(
        "/v1/search", json={"query": "espresso", "collection": "alpha"}, headers=t.headers("admin")
    )
    assert search.status_code == 404, search.text
    # The other tenant's collection is untouched.
    r = await t.client.get("/v1/collections/beta/documents", headers=t.headers("admin"))
    assert r.json()["total"] == 2


async def test_unknown_collection_is_404(t: Tenants) -> None:
    r = await t.client.delete("/v1/collections/nosuch", headers=t.headers("admin"))
    assert r.status_code == 404, r.text
    assert "nosuch" in r.json()["error"]["message"]


@pytest.mark.parametrize("who", ["alpha_read", "alpha_write"])
async def test_a_read_or_write_key_may_not_delete(t: Tenants, who: str) -> None:
    r = await t.client.delete("/v1/collections/alpha", headers=t.headers(who))
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden"
    assert "admin" in r.json()["error"]["message"]
    assert "alpha" in await listed(t)
