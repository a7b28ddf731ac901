"""The answer prompt's variants: each renders (braces in sources, instructions and questions
stay text), each source format packs, and `RAG_CITATIONS__PROMPT` names one."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from pipelines import prompts
from pipelines.chain import pack_sources
from pipelines.settings import CitationSettings, Settings

BRACES = "a {dict} and {{double}} and {0} and } {"


def _template(variant: prompts.PromptVariant) -> ChatPromptTemplate:
    """The template as RagChain builds it from a variant."""
    system, *examples = variant.template_messages()
    return ChatPromptTemplate.from_messages(
        [
            (system[0], system[1] + "{instructions}"),
            *examples,
            MessagesPlaceholder("history"),
            ("human", variant.question),
        ]
    )


@pytest.mark.parametrize("name", list(prompts.PROMPTS))
def test_every_variant_renders_sources_instructions_and_question_as_text(name: str) -> None:
    variant = prompts.prompt_variant(name)
    source = variant.format_source(1, "Venus {x}", "venus.txt", f"Venus is 464 degrees. {BRACES}")
    messages = _template(variant).format_messages(
        sources=source,
        instructions=prompts.format_instructions(f"Answer in French {BRACES}"),
        history=[("user", f"earlier {BRACES}"), ("assistant", "ok")],
        question=f"How hot is Venus? {BRACES}",
    )
    text = "\n".join(str(m.content) for m in messages)
    assert messages[0].type == "system"
    assert messages[-1].type == "human"
    assert f"How hot is Venus? {BRACES}" in str(messages[-1].content)
    assert f"Venus is 464 degrees. {BRACES}" in text
    assert f"Answer in French {BRACES}" in str(messages[0].content)
    assert f"earlier {BRACES}" in text
    assert text.count("[1]") >= 1
    for role, example in variant.examples:  # example turns come out as written
        assert any(str(m.content) == example for m in messages), role


def test_the_few_shot_variant_shows_a_worked_example_of_a_cited_answer() -> None:
    variant = prompts.prompt_variant("few-shot")
    assert [role for role, _ in variant.examples] == ["human", "ai"]
    assert "[1]" in variant.examples[-1][1]
    assert "{sources}" in variant.question  # the sources come with the question, as shown


@pytest.mark.parametrize("name", list(prompts.PROMPTS))
def test_every_source_format_packs_numbered_sources(name: str) -> None:
    variant = prompts.prompt_variant(name)
    docs = [
        Document(page_content=f"text {i} {{b}}", metadata={"score": 1 - i / 10, "title": f"T{i}"})
        for i in range(3)
    ]
    kept = pack_sources(docs, 1000, lambda t: len(t.split()), variant.format_source)
    assert [s.n for s in kept] == [1, 2, 3]
    for s in kept:
        assert s.prompt_text.startswith(f"[{s.n}]")
        assert s.text in s.prompt_text
        assert f"T{s.n - 1}" in s.prompt_text


def test_the_compact_source_format_is_one_line_with_a_short_label() -> None:
    line = prompts.format_source_compact(2, "x" * 80, "src", "one\n\ntwo  three")
    assert line.startswith("[2] (") and "\n" not in line
    assert line.endswith(") one two three")
    assert len(line.split(")")[0]) < 70
    assert prompts.format_source_compact(1, "", "", "body") == "[1] body"


def test_an_unknown_prompt_name_is_refused_with_the_names_there_are() -> None:
    with pytest.raises(ValueError, match="few-shot") as raised:
        prompts.prompt_variant("chatty")
    assert "RAG_CITATIONS__PROMPT" in str(raised.value)


def test_the_prompt_setting_names_a_variant_and_defaults_to_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert CitationSettings().prompt in prompts.PROMPTS
    monkeypatch.setenv("RAG_CITATIONS__PROMPT", "cite-last")
    assert Settings().citations.prompt == "cite-last"
