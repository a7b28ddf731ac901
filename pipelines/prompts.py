"""The prompts of the RAG chain (kept together so they can be reviewed and tuned in one place).

`PROMPTS` holds the answer prompt's variants by name (`RAG_CITATIONS__PROMPT` picks one;
bench/citation_prompts.py measures them side by side): the system text with its `{sources}`,
worked example turns, the question's turn, and how each source is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SYSTEM = (
    "You are a helpful assistant that answers questions using ONLY the numbered sources below.\n"
    "Rules:\n"
    "- Base every statement on the sources and cite them with their numbers in brackets, "
    "like [1] or [2][3], right after the statement.\n"
    "- If the sources do not contain the answer, say that you don't know based on the "
    "knowledge base. Do not make anything up.\n"
    "- Be concise.\n\n"
    "Sources:\n{sources}"
)

# A client's system and developer messages (a chat UI's system prompt), after our rules: they
# shape the answer's form, never what it may be based on.
INSTRUCTIONS = (
    "\n\nThe user's application adds these instructions. Follow them unless they conflict "
    "with the rules above, which always apply:\n{instructions}"
)

QUESTION = "{question}"

REWRITE = (
    "Rewrite the last user question as a single standalone search query that can be "
    "understood without the conversation. Reply with the query only.\n\n"
    "Conversation:\n{history}\n\nLast question: {question}\n\nStandalone query:"
)

NO_CONTEXT_ANSWER = (
    "The knowledge base has no information about this, so I can't answer it from the documents."
)


def format_source(n: int, title: str, source: str, text: str) -> str:
    label = title or source
    return f"[{n}] {label}\n{text.strip()}"


def format_instructions(instructions: str | None) -> str:
    """The application's instructions as the system prompt's last part ("" without any)."""
    if not instructions or not instructions.strip():
        return ""
    return INSTRUCTIONS.format(instructions=instructions.strip())


def format_source_compact(n: int, title: str, source: str, text: str) -> str:
    """A numbered list item: `[n]` and a short label on the line of the text."""
    label = (title or source).strip()
    short = label if len(label) <= 60 else label[:57].rstrip() + "..."
    body = " ".join(text.split())
    return f"[{n}] ({short}) {body}" if short else f"[{n}] {body}"


def _literal(text: str) -> str:
    """Template text that renders as itself (example turns are part of the template)."""
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True, slots=True)
class PromptVariant:
    """One answer prompt: `system` (a template with `{sources}`), example turns (plain text,
    shown as they are), `question` (a template with `{question}`), and the source format."""

    name: str
    system: str
    question: str = QUESTION
    examples: tuple[tuple[str, str], ...] = ()
    format_source: Callable[[int, str, str, str], str] = format_source

    def template_messages(self) -> list[tuple[str, str]]:
        """The (role, template) pairs that come before the history: the system's, then the
        example turns escaped (their braces stay text)."""
        return [("system", self.system), *((r, _literal(t)) for r, t in self.examples)]

    def fixed_text(self) -> str:
        """Everything the prompt adds besides the sources, question and history (its tokens
        are counted out of the sources' budget)."""
        return "\n".join([self.system, *(t for _, t in self.examples), self.question])


_EXAMPLE_SOURCES = (
    "[1] (Tea) Green tea is brewed with water at about 80 degrees Celsius for two minutes.\n"
    "[2] (Bread) Bread dough rises for about an hour in a warm place."
)

FEW_SHOT_SYSTEM = (
    "You answer questions using ONLY the numbered sources you are given.\n"
    "Rules:\n"
    "- Answer in one or two short sentences.\n"
    "- After each sentence, write the number of the source it comes from in brackets, "
    "like [1] or [2].\n"
    "- If the sources do not contain the answer, say that you don't know based on the "
    "knowledge base."
)
# The sources come with the question, as in the example turn.
FEW_SHOT_QUESTION = "Sources:\n{sources}\n\nQuestion: {question}"

# One worked example as chat turns: small models copy the form of a turn far better than
# they follow a rule.
FEW_SHOT_EXAMPLES = (
    (
        "human",
        f"Sources:\n{_EXAMPLE_SOURCES}\n\nQuestion: How hot should the water for green tea be?",
    ),
    ("ai", "Green tea is brewed with water at about 80 degrees Celsius [1]."),
)

NUMBERED_SYSTEM = (
    "Answer the question using ONLY the sources below. Each source is one line starting "
    "with its number in brackets.\n"
    "Cite the source of every statement with its number in brackets, like [1], at the end "
    "of the sentence. If no source answers the question, say that you don't know based on "
    "the knowledge base. Be concise.\n\n"
    "Sources:\n{sources}"
)

CITE_LAST_SYSTEM = (
    "You answer questions from a knowledge base. Use ONLY these numbered sources:\n\n"
    "{sources}\n\n"
    "If no source answers the question, say that you don't know based on the knowledge base."
)

# The question repeated after the sources, with the answer's form spelled out last: what a
# small model reads last, it follows.
CITE_LAST_QUESTION = (
    "Question: {question}\n\n"
    "Answer in one short sentence, then write the number of the source you used in "
    "brackets, for example: Paris is the capital of France [1]."
)

EXTRACT_SYSTEM = (
    "You answer questions by quoting the numbered sources you are given.\n"
    "Copy the one sentence of the sources that answers the question, word for word, then "
    "write the number of its source in brackets, like [1]. If no source answers the "
    "question, say that you don't know based on the knowledge base."
)

# The model copies rather than composes: a small model's words are then the source's, and
# its citation follows the form of the example turn.
EXTRACT_EXAMPLES = (
    FEW_SHOT_EXAMPLES[0],
    ("ai", "Green tea is brewed with water at about 80 degrees Celsius for two minutes [1]."),
)

PROMPTS: dict[str, PromptVariant] = {
    v.name: v
    for v in (
        PromptVariant("plain", SYSTEM),
        PromptVariant(
            "few-shot",
            FEW_SHOT_SYSTEM,
            question=FEW_SHOT_QUESTION,
            examples=FEW_SHOT_EXAMPLES,
            format_source=format_source_compact,
        ),
        PromptVariant("numbered", NUMBERED_SYSTEM, format_source=format_source_compact),
        PromptVariant(
            "extract",
            EXTRACT_SYSTEM,
            question=FEW_SHOT_QUESTION,
            examples=EXTRACT_EXAMPLES,
            format_source=format_source_compact,
        ),
        PromptVariant(
            "cite-last",
            CITE_LAST_SYSTEM,
            question=CITE_LAST_QUESTION,
            format_source=format_source_compact,
        ),
    )
}


def prompt_variant(name: str) -> PromptVariant:
    """The named variant; an unknown name is refused with the names there are."""
    try:
        return PROMPTS[name]
    except KeyError:
        raise ValueError(
            f"unknown prompt {name!r} (RAG_CITATIONS__PROMPT): one of {', '.join(PROMPTS)}"
        ) from None
