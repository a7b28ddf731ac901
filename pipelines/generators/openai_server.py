"""Generator adapter for OpenAI-compatible servers (vLLM, trtllm-serve, Ollama, SGLang)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from pipelines.errors import (
    ConfigError,
    GenerationFailed,
    GeneratorUnavailable,
    InvalidInput,
    NotFound,
    RagError,
    UpstreamTimeout,
)
from pipelines.settings import LLMSettings
from pipelines.sse_client import aiter_sse
from pipelines.types import GenerationChunk, GenerationRequest

log = logging.getLogger(__name__)

# Upstream answers that mean "this server cannot take it right now": worth another try.
_TRANSIENT_STATUS = frozenset({502, 503, 504})
# Failures that happen before the server has started generating anything.
_TRANSIENT_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


@dataclass(frozen=True, slots=True)
class _Route:
    """Where one routable model lives: server base URL (without /v1), served name, key."""

    alias: str
    base_url: str
    model: str
    api_key: str | None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class _Transient(Exception):
    """Internal: an attempt failed before generation started and may be retried."""


class OpenAIServerGenerator:
    """Streams chat completions over HTTP (SSE) from one or more OpenAI-compatible servers."""

    def __init__(self, settings: LLMSettings, *, transport: httpx.AsyncBaseTransport | None = None):
        if settings.base_url is None:
            raise ConfigError("OpenAIServerGenerator needs llm.base_url (RAG_LLM__BASE_URL)")
        default = _Route(
            alias=settings.model,
            base_url=_server_root(settings.base_url),
            model=settings.model,
            api_key=_secret(settings.api_key),
        )
        self._default = default
        self._routes: dict[str, _Route] = {default.alias: default}
        for alias, entry in settings.models.items():
            self._routes[alias] = _Route(
                alias=alias,
                base_url=_server_root(entry.base_url),
                model=entry.model,
                # A model on the default server shares its key unless it names its own.
                api_key=_secret(entry.api_key) or default.api_key,
            )
        self._max_model_len = settings.max_model_len
        self._retries = settings.retries
        self._probe_timeout = settings.connect_timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            transport=transport,
        )

    @property
    def model_names(self) -> list[str]:
        """Every name a request may use: the aliases first, then the served model names."""
        names = list(self._routes)
        names += [r.model for r in self._routes.values() if r.model not in names]
        return names

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def count_tokens(self, text: str) -> int:
        """An estimate (about 4 characters per token): the real tokenizer lives on the server.

        Close for English, low for code and non-Latin scripts: prompt budgets keep a margin,
        and the server still rejects a prompt that is really too long (InvalidInput).
        """
        return len(text) // 4 + 1

    async def ready(self) -> bool:
        """The default server answers `GET /v1/models` with 200 (other routes fail per request)."""
        try:
            response = await self._client.get(
                f"{self._default.base_url}/v1/models",
                headers=self._default.headers(),
                timeout=self._probe_timeout,  # a probe must not hang for a generation's timeout
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def list_models(self) -> list[str]:
        """The model ids each configured server reports on `GET /v1/models`."""
        ids: list[str] = []
        for base_url, route in {r.base_url: r for r in self._routes.values()}.items():
            try:
                response = await self._client.get(f"{base_url}/v1/models", headers=route.headers())
                response.raise_for_status()
                data = response.json()["data"]
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                raise GeneratorUnavailable(f"cannot list models at {base_url}: {exc}") from exc
            ids += [str(m["id"]) for m in data if str(m["id"]) not in ids]
        return ids

    def _route(self, model: str | None) -> _Route:
        """The server for a requested model: by alias, else by served model name."""
        if model is None:
            return self._default
        if model in self._routes:
            return self._routes[model]
        for candidate in self._routes.values():
            if candidate.model == model:
                return candidate
        raise NotFound(
            f"unknown model '{model}'; known models: {', '.join(sorted(self.model_names))}"
        )

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        route = self._route(request.model)
        if not request.messages:
            raise InvalidInput("a generation request needs at least one message")
        body = {
            "model": route.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            # Only what the client set: the upstream's defaults stay its own.
            **request.sampling.options(),
        }
        headers = route.headers()
        if request.request_id:
            headers["X-Request-Id"] = request.request_id
        response = await self._open(route, body, headers)
        # Closing the response (also on GeneratorExit/CancelledError) drops the connection,
        # which is how an OpenAI-compatible server learns to abort the generation.
        try:
            async with aclosing(_read_completion(response, route)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            await response.aclose()

    async def _open(
        self, route: _Route, body: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        """Send the request; retry connection failures and 502/503/504, never once it streams."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retries + 1),
            wait=wait_exponential(multiplier=0.25, max=2.0),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send(route, body, headers)
        except _Transient as exc:
            raise GeneratorUnavailable(
                f"model '{route.alias}' at {route.base_url} is unavailable after "
                f"{self._retries + 1} attempts: {exc}"
            ) from exc
        raise AssertionError("tenacity ended without a result")  # pragma: no cover

    async def _send(
        self, route: _Route, body: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        url = f"{route.base_url}/v1/chat/completions"
        try:
            response = await self._client.send(
                self._client.build_request("POST", url, json=body, headers=headers), stream=True
            )
        except _TRANSIENT_ERRORS as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"model '{route.alias}' did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise GeneratorUnavailable(f"model '{route.alias}': {exc}") from exc
        if response.status_code == 200:
            return response
        try:
            detail = _error_detail(await response.aread())
        except httpx.HTTPError:
            detail = ""
        finally:
            await response.aclose()
        status = response.status_code
        if status in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status} {detail}")
        raise _status_error(status, route, detail)

    async def close(self) -> None:
        await self._client.aclose()


async def _read_completion(
    response: httpx.Response, route: _Route
) -> AsyncGenerator[GenerationChunk, None]:
    """Turn the server's SSE chunks into text deltas and one final chunk with usage."""
    finish: Literal["stop", "length"] | None = None
    usage: dict[str, Any] = {}
    try:
        async with aclosing(aiter_sse(response.aiter_lines())) as events:
            async for sse in events:
                data = sse.data  # the event's name and id carry nothing we use
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if not isinstance(event, dict):
                    raise ValueError(f"expected a JSON object, got {data[:80]!r}")
                if "error" in event:
                    raise GenerationFailed(
                        f"model '{route.alias}' failed mid-stream: {_error_detail(data.encode())}"
                    )
                usage = event.get("usage") or usage
                for choice in event.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield GenerationChunk(text=text)
                    if choice.get("finish_reason"):
                        finish = _finish_reason(choice["finish_reason"], route)
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"model '{route.alias}' stopped sending tokens") from exc
    except httpx.TransportError as exc:
        # The connection broke (reset, or closed before the chunked body's end): the server
        # went away mid-answer (crashed, killed, restarting). That is the upstream being down,
        # as a refused connection is before the answer: 503-class, retryable.
        raise GeneratorUnavailable(
            f"model '{route.alias}' at {route.base_url} went away mid-answer "
            f"({type(exc).__name__}: {exc}); retry once it is back"
        ) from exc
    except httpx.HTTPError as exc:  # e.g. a body that cannot be decoded: the server's fault
        raise GenerationFailed(f"model '{route.alias}' sent a broken stream: {exc}") from exc
    except ValueError as exc:  # json.JSONDecodeError
        raise GenerationFailed(f"model '{route.alias}' sent a malformed chunk: {exc}") from exc
    if finish is None:
        raise GenerationFailed(f"model '{route.alias}' ended the stream without a finish reason")
    yield GenerationChunk(
        text="",
        finish_reason=finish,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )


def _finish_reason(reason: str, route: _Route) -> Literal["stop", "length"]:
    if reason == "length":
        return "length"
    if reason in ("abort", "error"):
        raise GenerationFailed(f"model '{route.alias}' ended the generation with '{reason}'")
    return "stop"  # stop, eos, tool_calls, content_filter: the answer is over


def _status_error(status: int, route: _Route, detail: str) -> RagError:
    where = f"model '{route.alias}' ({route.model} at {route.base_url})"
    if status in (400, 413, 422):
        return InvalidInput(f"{where} rejected the request: {detail}")
    if status == 404:
        return NotFound(f"{where} is not served there: {detail}")
    if status == 429:
        return GeneratorUnavailable(f"{where} is overloaded (HTTP 429): {detail}")
    if status in (401, 403):
        return GenerationFailed(f"{where} refused our credentials (HTTP {status})")
    return GenerationFailed(f"{where} answered HTTP {status}: {detail}")


def _error_detail(raw: bytes) -> str:
    """The human message from an OpenAI-style error body, else the body itself (shortened)."""
    text = raw.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:300]
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])[:300]
    if isinstance(error, str):
        return error[:300]
    return text[:300]


def _server_root(base_url: str) -> str:
    """Accept `http://host:8000`, `.../` or `.../v1`; paths are added per endpoint."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1")


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else str(value.get_secret_value())
