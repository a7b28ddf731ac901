"""Document-level permissions and per-key limits through the API: keys in different groups get
different chunks for the same question (checked against the store's payloads), a document
moved to another group is invisible to the old one right after its re-upload; the N+1-th
request in a key's minute is 429 with Retry-After while other keys go on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest

from app.main import create_app
from app.services import Services, open_keys
from pipelines.access import FULL_ACCESS
from pipelines.core import Core
from pipelines.keys import KeyStore
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import in_process_client
from tests.support.tenancy import auth

C = "corp"
FILES = {
    "holidays.md": ("", "# Holidays\n\nThe company policy on holidays: 25 days a year."),
    "salaries.md": ("hr", "# Salaries\n\nThe company policy on salaries: HR-ONLY bands A to F."),
    "budget.md": ("finance", "# Budget\n\nThe company policy on budget: FIN-ONLY forecast."),
}


@dataclass
class Corp:
    client: httpx.AsyncClient
    services: Services
    keys: KeyStore
    generator: ScriptedGenerator
    tokens: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return auth(self.tokens[who])

    async def upload(self, name: str, groups: str, who: str = "admin") -> httpx.Response:
        return await self.client.post(
            f"/v1/collections/{C}/documents",
            files=[("files", (name, FILES[name][1].encode(), "text/markdown"))],
            data={"groups": groups},
            headers=self.h(who),
        )

    async def sources(self, who: str) -> set[str]:
        r = await self.client.post(
            "/v1/search",
            json={"query": "company policy", "collection": C, "k": 10},
            headers=self.h(who),
        )
        assert r.status_code == 200, r.text
        return {hit["source"] for hit in r.json()["hits"]}


@pytest.fixture
async def corp(core: Core) -> AsyncIterator[Corp]:
    async with AsyncExitStack() as stack:
        keys, quotas = await open_keys(core.settings, stack)
        generator = ScriptedGenerator()
        services = Services(core=core, keys=keys, quotas=quotas)
        services.set_generator(generator)
        tokens = {}
        for who, role, groups, rpm in (
            ("admin", "admin", [], None),
            ("hr", "read", ["hr"], None),
            ("finance", "read", ["finance"], None),
            ("staff", "read", [], None),
            ("hr_writer", "write", ["hr"], None),
            ("limited", "read", [], 2),
        ):
            _, tokens[who] = keys.create(
                name=who,
                role=role,  # type: ignore[arg-type]
                collections=[C],
                groups=groups,
                requests_per_minute=rpm,
            )
        client = await stack.enter_async_context(
            in_process_client(create_app(core.settings, services=services))
        )
        built = Corp(client, services, keys, generator, tokens)
        for name, (groups, _) in FILES.items():
            assert (await built.upload(name, groups)).status_code == 201
        yield built


async def test_each_key_sees_public_and_its_groups(corp: Corp) -> None:
    assert await corp.sources("staff") == {"holidays.md"}
    assert await corp.sources("hr") == {"holidays.md", "salaries.md"}
    assert await corp.sources("finance") == {"holidays.md", "budget.md"}
    assert await corp.sources("admin") == set(FILES)
    # What each key got agrees with the access list stored on each chunk.
    states = await corp.services.store.document_states(C, access=FULL_ACCESS)
    stored = {s.source: set(s.groups) for s in states.values()}
    assert stored == {"holidays.md": set(), "salaries.md": {"hr"}, "budget.md": {"finance"}}


async def test_answers_and_listings_follow_the_groups(corp: Corp) -> None:
    r = await corp.client.post(
        "/v1/ask",
        json={"question": "What is the company policy on budget?", "collection": C},
        headers=corp.h("hr"),
    )
    assert r.status_code == 200, r.text
    assert "FIN-ONLY" not in r.text
    assert all("FIN-ONLY" not in m.content for q in corp.generator.requests for m in q.messages)
    listing = await corp.client.get(f"/v1/collections/{C}/documents", headers=corp.h("hr"))
    assert {d["source"] for d in listing.json()["documents"]} == {"holidays.md", "salaries.md"}
    stats = await corp.client.get("/v1/collections", headers=corp.h("staff"))
    # Nor the size or last change of a collection holding documents it may not read.
    assert stats.json()["collections"] == [
        {"name": C, "documents": 1, "chunks": 1, "size_bytes": None, "last_ingest_at": None}
    ]


async def test_a_document_moved_to_another_group_leaves_the_old_one_at_once(corp: Corp) -> None:
    assert "salaries.md" in await corp.sources("hr")
    r = await corp.upload("salaries.md", "finance")
    assert r.status_code == 201, r.text  # same text, new groups: updated
    assert r.json()["updated"] == 1
    assert "salaries.md" not in await corp.sources("hr")
    assert "salaries.md" in await corp.sources("finance")
    r = await corp.upload("salaries.md", "")
    assert "salaries.md" in await corp.sources("staff")  # public again


async def test_a_group_limited_writer_cannot_write_beyond_its_groups(corp: Corp) -> None:
    r = await corp.upload("holidays.md", "finance", who="hr_writer")
    assert r.status_code == 403 and "finance" in r.json()["error"]["message"]
    r = await corp.upload("budget.md", "hr", who="hr_writer")  # a finance document's name
    assert r.status_code == 403 and "may not read it" in r.json()["error"]["message"]
    doc = next(
        s.doc_id
        for s in (await corp.services.store.document_states(C, access=FULL_ACCESS)).values()
        if s.source == "budget.md"
    )
    r = await corp.client.delete(
        f"/v1/collections/{C}/documents/{doc}", headers=corp.h("hr_writer")
    )
    assert r.status_code == 404  # not there for this key
    assert "budget.md" in await corp.sources("finance")


async def test_the_request_over_the_minute_limit_is_429_and_others_go_on(corp: Corp) -> None:
    for _ in range(2):
        assert (await corp.client.get("/v1/me", headers=corp.h("limited"))).status_code == 200
    r = await corp.client.get("/v1/me", headers=corp.h("limited"))
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    error = r.json()["error"]
    assert error["code"] == "rate_limited" and error["retryable"] is True
    assert "2 requests per minute" in error["message"]
    assert (await corp.client.get("/v1/me", headers=corp.h("staff"))).status_code == 200


async def test_the_daily_token_budget_is_429_once_spent(corp: Corp) -> None:
    _, token = corp.keys.create(name="thrifty", role="read", collections=[C], tokens_per_day=3)
    ask = {"question": "What is the holiday policy?", "collection": C}
    first = await corp.client.post("/v1/ask", json=ask, headers=auth(token))
    assert first.status_code == 200 and first.json()["usage"]["completion_tokens"] > 3
    second = await corp.client.post("/v1/ask/stream", json=ask, headers=auth(token))
    assert second.status_code == 429
    assert "tokens per day" in second.json()["error"]["message"]
    assert int(second.headers["retry-after"]) >= 1
    search = {"query": "holiday", "collection": C}
    assert (
        await corp.client.post("/v1/search", json=search, headers=auth(token))
    ).status_code == 200
