"""Generation stops when the client leaves: work on an answer while watching for its disconnect.

Once a stream has started, its client leaving is the stream's business: the OpenAI stream's
relay is cancelled (sse-starlette), which aborts generation; `/v1/ask/stream` waits for a
reconnect first (`app/resume.py`). Before that, a JSON answer is collected before anything is
sent, and a stream waits for its first token before its 200: meanwhile the request's
`http.disconnect` is watched here, and when it comes first the work is cancelled, which
closes the answer and so aborts generation upstream (no stream exists yet to resume).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from pipelines.chain import Answer, AskInput, RagChain
from pipelines.errors import RagError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClientDisconnected(RagError):
    """The client closed the connection before its answer was ready: nobody reads this
    response; its status (nginx's 499) shows in the metrics."""

    code = "client_closed_request"
    status = 499


async def _disconnected(request: Request) -> None:
    # The body has been read: what the server sends next is the client's disconnect (or,
    # once the response is complete, a disconnect too; the watch is over by then).
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, rid: str, work: Awaitable[T]) -> T:
    """`work`'s result, unless the client disconnects first: then `work` is cancelled (its
    cleanup, the abort upstream, runs to its end) and ClientDisconnected is raised."""
    working = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((working, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not working.done():
            working.cancel()
            await asyncio.wait((working,))
    if working.cancelled():
        log.info("request %s: client disconnected, generation aborted", rid)
        raise ClientDisconnected("the client disconnected before its answer was ready")
    return working.result()


async def answer_text(chain: RagChain, ask: AskInput, request: Request) -> tuple[Answer, str]:
    """The whole answer for a JSON response; a client that leaves first aborts it."""

    async def collect() -> tuple[Answer, str]:
        answer = await chain.answer(ask)
        return answer, await answer.collect()

    return await unless_disconnected(request, ask.request_id, collect())
