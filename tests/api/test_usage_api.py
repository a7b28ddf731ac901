"""Usage and cost on the real app: every answer route shows its usage × the configured prices
(JSON, the SSE `done` event, the OpenAI `usage` and `cost`, streamed with and without
`stream_options.include_usage`); GET /v1/usage totals per key; one log line per request."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.logs import JsonFormatter
from app.main import create_app
from app.services import Services, open_keys
from pipelines.core import Core
from pipelines.settings import BUNDLED_MODEL, Settings
from pipelines.sse_client import parse_sse
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import in_process_client
from tests.support.sse import parse_events
from tests.support.tenancy import Tenants, tenants

# The scripted generator reports 42 prompt and 5 completion tokens for every answer.
PROMPT, COMPLETION = 42, 5
# The default model's own price; "*" (any other) and the alias's served model's differ, so
# a wrong lookup shows in the number.
PRICES = {
    BUNDLED_MODEL: {"prompt_per_million": 2.0, "completion_per_million": 8.0},
    "big-served": {"prompt_per_million": 10.0, "completion_per_million": 30.0},
    "*": {"prompt_per_million": 100.0, "completion_per_million": 100.0},
}
USD = (PROMPT * 2.0 + COMPLETION * 8.0) / 1e6
BIG_USD = (PROMPT * 10.0 + COMPLETION * 30.0) / 1e6
REFERENCE_USD = (PROMPT * 0.15 + COMPLETION * 0.60) / 1e6  # gpt-4o-mini, the default
ASK = {"question": "espresso?", "collection": "alpha"}
CHAT = {"model": "rag:alpha", "messages": [{"role": "user", "content": "espresso?"}]}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        llm={
            "prices": PRICES,
            "models": {"big": {"base_url": "http://127.0.0.1:9/v1", "model": "big-served"}},
        }
    )


@pytest.fixture
async def t(core: Core, tmp_path: Path) -> AsyncIterator[Tenants]:
    async with tenants(core, tmp_path / "docs") as built:
        yield built


def assert_cost(cost: dict[str, Any], usd: float = USD) -> None:
    assert cost["usd"] == pytest.approx(usd)
    assert cost["reference_usd"] == pytest.approx(REFERENCE_USD)
    assert cost["reference_model"] == "gpt-4o-mini"


def chunks_of(body: str) -> list[dict[str, Any]]:
    """An OpenAI stream's chunks as sent, `[DONE]` checked and left out."""
    data = [e.data for e in parse_sse(body)]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


async def test_json_answer_and_done_event_carry_usage_and_cost(t: Tenants) -> None:
    headers = t.headers("alpha_read")
    body = (await t.client.post("/v1/ask", json=ASK, headers=headers)).json()
    assert body["usage"] == {"prompt_tokens": 42, "completion_tokens": 5, "total_tokens": 47}
    assert_cost(body["cost"])

    r = await t.client.post("/v1/ask/stream", json=ASK, headers=headers)
    done = parse_events(r.text)[-1]
    assert done.event == "done"
    assert done.data["usage"] == body["usage"]
    assert_cost(done.data["cost"])

    # An alias is priced at its served model's price.
    big = await t.client.post("/v1/ask", json={**ASK, "model": "big"}, headers=headers)
    assert_cost(big.json()["cost"], BIG_USD)


async def test_openai_route_usage_and_cost_streamed_or_not(t: Tenants) -> None:
    headers = t.headers("alpha_read")
    completion = (await t.client.post("/v1/chat/completions", json=CHAT, headers=headers)).json()
    assert completion["usage"]["total_tokens"] == 47
    assert_cost(completion["cost"])

    # include_usage: `usage` null on every chunk but the last, which has no choices, the
    # whole answer's usage and the cost.
    streamed = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    r = await t.client.post("/v1/chat/completions", json=streamed, headers=headers)
    chunks = chunks_of(r.text)
    *content, last = chunks
    assert all(c["usage"] is None and "cost" not in c for c in content)
    assert content[-1]["choices"][0]["finish_reason"] == "stop" and "sources" in content[-1]
    assert last["choices"] == [] and last["usage"]["prompt_tokens"] == PROMPT
    assert last["usage"]["completion_tokens"] == COMPLETION
    assert_cost(last["cost"])

    # Without it: no `usage` anywhere (OpenAI's shape); the cost is on the final chunk.
    r = await t.client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers)
    *content, last = chunks_of(r.text)
    assert all("usage" not in c and "cost" not in c for c in content)
    assert "usage" not in last and last["choices"][0]["finish_reason"] == "stop"
    assert_cost(last["cost"])


async def test_usage_totals_per_key_own_for_a_key_all_for_an_admin(t: Tenants) -> None:
    alpha, beta = t.headers("alpha_read"), t.headers("beta_read")
    assert (await t.client.post("/v1/ask", json=ASK, headers=alpha)).status_code == 200
    r = await t.client.post("/v1/ask/stream", json=ASK, headers=alpha)
    assert parse_events(r.text)[-1].event == "done"
    beta_chat = {**CHAT, "model": "rag:beta"}
    r = await t.client.post("/v1/chat/completions", json=beta_chat, headers=beta)
    assert r.status_code == 200
    today = datetime.now(UTC).date().isoformat()

    own = (await t.client.get("/v1/usage", headers=alpha)).json()
    assert own["until"] == today and own["reference_model"] == "gpt-4o-mini"
    (mine,) = own["keys"]
    assert (mine["key_id"], mine["name"]) == (t.ids["alpha_read"], "alpha_read")
    assert mine["requests"] == 2
    assert (mine["prompt_tokens"], mine["completion_tokens"]) == (2 * PROMPT, 2 * COMPLETION)
    assert mine["total_tokens"] == 2 * (PROMPT + COMPLETION)
    assert mine["cost_usd"] == pytest.approx(2 * USD)
    assert mine["reference_cost_usd"] == pytest.approx(2 * REFERENCE_USD)
    assert [d["day"] for d in mine["days"]] == [today]

    (theirs,) = (await t.client.get("/v1/usage", headers=beta)).json()["keys"]
    assert theirs["key_id"] == t.ids["beta_read"] and theirs["requests"] == 1
    assert theirs["cost_usd"] == pytest.approx(USD)

    # A key asking for another's usage is refused; its own id is fine.
    other = {"key_id": t.ids["beta_read"]}
    r = await t.client.get("/v1/usage", params=other, headers=alpha)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await t.client.get("/v1/usage", params={"key_id": t.ids["alpha_read"]}, headers=alpha)
    assert r.json()["keys"][0]["requests"] == 2

    admin = t.headers("admin")
    every = (await t.client.get("/v1/usage", headers=admin)).json()["keys"]
    assert {k["key_id"]: k["requests"] for k in every} == {
        t.ids["alpha_read"]: 2,
        t.ids["beta_read"]: 1,
    }
    (one,) = (await t.client.get("/v1/usage", params=other, headers=admin)).json()["keys"]
    assert one == theirs
    # A key without usage, asked for by id, is there with zeros.
    (idle,) = (
        await t.client.get("/v1/usage", params={"key_id": t.ids["admin"]}, headers=admin)
    ).json()["keys"]
    assert idle["requests"] == 0 and idle["days"] == [] and idle["name"] == "admin"

    # The range: days before today have nothing; a range backwards or too long is a 422.
    day = datetime.now(UTC).date()
    past = {"since": str(day - timedelta(days=10)), "until": str(day - timedelta(days=1))}
    assert (await t.client.get("/v1/usage", params=past, headers=admin)).json()["keys"] == []
    for bad in ({"since": today, "until": "2020-01-01"}, {"since": "2020-01-01"}):
        r = await t.client.get("/v1/usage", params=bad, headers=admin)
        assert r.status_code == 422, r.text


async def test_an_open_server_counts_usage_under_open(services: Services) -> None:
    async with AsyncExitStack() as stack:
        # A key database with no key in it: the server runs open (loopback).
        services.keys, services.quotas = await open_keys(services.settings, stack)
        services.set_generator(ScriptedGenerator())
        client = await stack.enter_async_context(
            in_process_client(create_app(services.settings, services=services))
        )
        assert (
            await client.post("/v1/ask", json={"question": "How hot is the surface of Venus?"})
        ).status_code == 200
        (entry,) = (await client.get("/v1/usage")).json()["keys"]
        assert (entry["key_id"], entry["name"], entry["requests"]) == ("open", "anonymous", 1)
        assert entry["cost_usd"] == pytest.approx(USD)


def json_lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    """The records of `logger` as the JSON format writes them (one object per line)."""
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name == logger]
    assert all("\n" not in line for line in lines)
    return [json.loads(line) for line in lines]


async def test_one_json_log_line_per_request_with_its_fields(
    t: Tenants, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ragserve")
    headers = t.headers("alpha_read")
    answered = await t.client.post("/v1/ask", json=ASK, headers=headers)
    refused = await t.client.get("/v1/collections/alpha/documents")
    probe = await t.client.get("/healthz")
    streamed = await t.client.post("/v1/ask/stream", json=ASK, headers=headers)
    t.generator.fail_after = 2
    failed = await t.client.post("/v1/ask/stream", json=ASK, headers=headers)

    audit = json_lines(caplog, "ragserve.audit")
    assert [line["request_id"] for line in audit] == [
        answered.headers["x-request-id"],
        refused.headers["x-request-id"],
        streamed.headers["x-request-id"],
        failed.headers["x-request-id"],
    ]
    answer, unauthorized, done, stream = audit
    assert answer["level"] == "info" and answer["time"].endswith("Z")
    assert {k: answer[k] for k in ("method", "route", "status", "collection", "key_id")} == {
        "method": "POST",
        "route": "/v1/ask",
        "status": 200,
        "collection": "alpha",
        "key_id": t.ids["alpha_read"],
    }
    assert answer["key_name"] == "alpha_read" and isinstance(answer["latency_ms"], int | float)
    assert (answer["prompt_tokens"], answer["completion_tokens"]) == (PROMPT, COMPLETION)
    assert answer["cost_usd"] == pytest.approx(USD)
    assert answer["reference_cost_usd"] == pytest.approx(REFERENCE_USD)
    assert f"tokens={PROMPT}+{COMPLETION}" in answer["message"]
    # Refused before routing, still named by its route template, never the raw path.
    assert unauthorized["route"] == "/v1/collections/{collection}/documents"
    assert unauthorized["status"] == 401 and unauthorized["key_id"] is None
    assert "prompt_tokens" not in unauthorized
    # A stream's line is written once it has ended, so it has the answer's tokens too.
    assert done["route"] == "/v1/ask/stream" and done["completion_tokens"] == COMPLETION
    assert done["cost_usd"] == pytest.approx(USD)
    # A stream that failed mid-way: its error event names the request the log line names.
    error = parse_events(failed.text)[-1]
    assert error.event == "error"
    assert error.data["error"]["request_id"] == stream["request_id"]
    assert stream["route"] == "/v1/ask/stream" and stream["status"] == 200

    (health,) = json_lines(caplog, "ragserve.access")
    assert probe.status_code == 200
    assert health["route"] == "/healthz" and health["level"] == "debug"
    assert health["request_id"] == probe.headers["x-request-id"]
