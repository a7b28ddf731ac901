"""The OpenAI route honours or refuses what clients send (issue 18): sampling fields reach the
generator, fields of features we cannot honour are a 400 naming them, system messages reach
the prompt under the grounding rules, and `/v1/models/{id}` answers the SDK's retrieve."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from app.main import create_app
from app.services import Services
from pipelines.generators.openai_server import OpenAIServerGenerator
from pipelines.settings import LLMSettings, Settings
from pipelines.types import ChatMessage, GenerationRequest, Sampling
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import in_process_client, sdk_over

QUESTION = [{"role": "user", "content": "How hot is Venus?"}]


@pytest.fixture
def generator(services: Services) -> ScriptedGenerator:
    gen = ScriptedGenerator()
    services.set_generator(gen)
    return gen


async def chat(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": "rag:default", "messages": QUESTION, **fields}
    return await client.post("/v1/chat/completions", json=body)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"stop": "END"}, Sampling(stop=("END",))),
        ({"stop": ["END", "\n\n"]}, Sampling(stop=("END", "\n\n"))),
        ({"seed": 7}, Sampling(seed=7)),
        ({"top_p": 0.5}, Sampling(top_p=0.5)),
        ({"presence_penalty": -1.5}, Sampling(presence_penalty=-1.5)),
        ({"frequency_penalty": 2}, Sampling(frequency_penalty=2.0)),
        ({}, Sampling()),
    ],
)
async def test_sampling_fields_reach_the_generation_request(
    client: httpx.AsyncClient,
    generator: ScriptedGenerator,
    fields: dict[str, Any],
    expected: Sampling,
) -> None:
    r = await chat(client, **fields)
    assert r.status_code == 200, r.text
    assert generator.requests[-1].sampling == expected
    # What the adapters send: only the fields the client set.
    assert generator.requests[-1].sampling.options().keys() == fields.keys()


async def test_sampling_fields_reach_a_streamed_generation_too(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await chat(client, stream=True, stop=["x"], seed=3, top_p=1)
    assert r.status_code == 200, r.text
    assert generator.requests[-1].sampling == Sampling(stop=("x",), seed=3, top_p=1.0)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": ""}, "stop"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"seed": 2**63}, "seed"),
        ({"n": 0}, "n"),
    ],
)
async def test_out_of_range_sampling_fields_are_422_naming_them(
    client: httpx.AsyncClient, generator: ScriptedGenerator, fields: dict[str, Any], param: str
) -> None:
    r = await chat(client, **fields)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param
    assert generator.requests == []


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [TOOL]}, "tools"),
        ({"tools": [TOOL], "tool_choice": "none"}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"functions": [TOOL["function"]]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"n": 2}, "n"),
    ],
)
async def test_fields_we_cannot_honour_are_400_naming_them(
    client: httpx.AsyncClient, generator: ScriptedGenerator, fields: dict[str, Any], param: str
) -> None:
    r = await chat(client, **fields)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"].startswith(f"'{param}' is not supported: ")
    assert error["code"] == "invalid_request"
    assert error["param"] == param  # the SDKs' `err.param`
    assert generator.requests == []


async def test_neutral_values_of_refused_fields_and_unknown_fields_are_accepted(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await chat(
        client,
        tools=[],
        tool_choice="none",
        response_format={"type": "text"},
        logprobs=False,
        top_logprobs=0,
        n=1,
        user="u-1",
        metadata={"a": "b"},
        some_future_field=True,
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Venus is hot [1]."


async def test_system_and_developer_messages_reach_the_prompt_after_the_grounding_rules(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    messages = [
        {"role": "system", "content": "Reply only with the single word BANANA."},
        {"role": "developer", "content": [{"type": "text", "text": "Use {braces} freely."}]},
        *QUESTION,
    ]
    r = await client.post(
        "/v1/chat/completions", json={"model": "rag:default", "messages": messages}
    )
    assert r.status_code == 200, r.text
    prompt = generator.requests[-1].messages
    assert [m.role for m in prompt].count("system") == 1  # one system message, ours
    assert prompt[0].role == "system" and prompt[-1].role == "user"
    system = prompt[0].content
    rules = system.index("don't know based on the knowledge base")
    added = system.index("The user's application adds these instructions")
    banana = system.index("Reply only with the single word BANANA.")
    assert rules < added < banana
    assert "Use {braces} freely." in system  # text, not template
    assert "[1]" in system and prompt[-1].content.endswith("How hot is Venus?")


async def test_without_system_messages_the_prompt_has_no_instructions(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await chat(client)
    assert r.status_code == 200, r.text
    assert "application adds" not in generator.requests[-1].messages[0].content


async def test_instructions_count_in_the_token_budget(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    """Instructions too long for the model's context leave no room: refused, not truncated."""
    long = "Be brief. " * 900  # about 2250 tokens for the scripted generator (2048 context)
    messages = [{"role": "system", "content": long}, *QUESTION]
    r = await client.post(
        "/v1/chat/completions", json={"model": "rag:default", "messages": messages}
    )
    assert r.status_code == 422, r.text
    assert "context" in r.json()["error"]["message"]
    assert generator.requests == []


async def test_model_card_for_a_visible_model(client: httpx.AsyncClient) -> None:
    for model in ("ragserve", "rag:default"):
        r = await client.get(f"/v1/models/{model}")
        assert r.status_code == 200, r.text
        card = r.json()
        assert card["id"] == model and card["object"] == "model"
        assert card["owned_by"] == "ragserve" and isinstance(card["created"], int)


async def test_model_card_for_an_unknown_model_is_404_in_the_openai_shape(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/v1/models/rag:nope")
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "not_found" and error["type"] == "invalid_request_error"
    assert "'rag:nope'" in error["message"] and "rag:default" in error["message"]


@pytest.fixture
async def sdk(settings: Settings, services: Services) -> AsyncIterator[openai.AsyncOpenAI]:
    services.set_generator(ScriptedGenerator())
    async with in_process_client(create_app(settings, services=services)) as http:
        yield sdk_over(http)


async def test_sdk_retrieves_a_model(sdk: openai.AsyncOpenAI) -> None:
    model = await sdk.models.retrieve("ragserve")
    assert model.id == "ragserve" and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("rag:nope")


def recording_upstream(bodies: list[dict[str, Any]]) -> httpx.MockTransport:
    """An OpenAI-compatible server's answer (the process boundary), keeping each request body."""

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        events = [
            {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
        ]
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("sampling", "sent"),
    [
        (Sampling(), {}),
        (
            Sampling(stop=("END",), seed=7, top_p=0.9, presence_penalty=1, frequency_penalty=-1),
            {
                "stop": ["END"],
                "seed": 7,
                "top_p": 0.9,
                "presence_penalty": 1,
                "frequency_penalty": -1,
            },
        ),
        (Sampling(seed=0), {"seed": 0}),
    ],
)
async def test_upstream_server_gets_the_sampling_fields_only_when_set(
    sampling: Sampling, sent: dict[str, Any]
) -> None:
    bodies: list[dict[str, Any]] = []
    settings = LLMSettings(base_url="http://upstream.test", model="m", retries=0)
    generator = OpenAIServerGenerator(settings, transport=recording_upstream(bodies))
    try:
        request = GenerationRequest(
            [ChatMessage("user", "hi")], max_tokens=8, temperature=0.2, sampling=sampling
        )
        chunks = [c async for c in generator.stream(request)]
    finally:
        await generator.close()
    assert "".join(c.text for c in chunks) == "hi"
    names = {"stop", "seed", "top_p", "presence_penalty", "frequency_penalty"}
    assert {k: v for k, v in bodies[-1].items() if k in names} == sent
    assert bodies[-1]["temperature"] == 0.2 and bodies[-1]["max_tokens"] == 8
