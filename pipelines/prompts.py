"""The prompts of the RAG chain (kept together so they can be reviewed and tuned in one place)."""

from __future__ import annotations

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
