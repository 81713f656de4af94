"""The model server: the `LLM` protocol and its real implementation over the `openai` SDK.

Any OpenAI-compatible chat-completions endpoint works (vLLM, Ollama, llama.cpp, OpenAI). Every
failure of the model server becomes a domain error (`ModelUnavailable`, `ModelTimeout`,
`ModelError`) with a sentence a person can act on; nothing of the SDK leaks past this module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, cast

import anyio

from docqa.errors import DocqaError, ModelError, ModelTimeout, ModelUnavailable
from docqa.settings import Settings

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

log = logging.getLogger(__name__)


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class CompletionStream(Protocol):
    """A streamed completion that is already open: the server has accepted the request."""

    finish_reason: str | None
    usage: dict[str, int] | None

    def deltas(self) -> AsyncIterator[str]:
        """The text as it arrives. Raises a `DocqaError` if the model fails part-way."""
        ...

    async def aclose(self) -> None:
        """Stop the upstream request now (idempotent); the model server sees it cancelled."""
        ...


class LLM(Protocol):
    async def stream(self, messages: list[ChatMessage], *, max_tokens: int) -> CompletionStream:
        """Open a streamed completion; raises a `DocqaError` if the server cannot start one."""
        ...

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int) -> str:
        """One whole completion, not streamed (used to rewrite follow-up questions)."""
        ...

    async def aclose(self) -> None: ...


def model_failure(exc: Exception, timeout_s: float) -> DocqaError:
    """The domain error for an exception raised by the `openai` SDK."""
    import openai

    if isinstance(exc, DocqaError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeout(f"The model server did not answer within {timeout_s:g} seconds.")
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailable("The model server cannot be reached, or it dropped the connection.")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return ModelUnavailable("The model server is overloaded; try again shortly.")
        if status in (401, 403):
            return ModelError(
                "The model server refused docqa's credentials (check DOCQA_LLM_API_KEY)."
            )
        if status == 404:
            return ModelError(
                "The model server does not know the configured model (check DOCQA_LLM_MODEL)."
            )
        if status >= 500:
            return ModelError(f"The model server failed (HTTP {status}).")
        return ModelError(f"The model server rejected the request (HTTP {status}).")
    if isinstance(exc, openai.APIError):
        return ModelError("The model server reported an error while answering.")
    if isinstance(exc, openai.OpenAIError):
        return ModelError("The model server sent a reply docqa could not read.")
    raise exc


class _OpenAIStream:
    def __init__(self, stream: Any, timeout_s: float) -> None:
        self._stream = stream
        self._timeout_s = timeout_s
        self._closed = False
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None

    async def deltas(self) -> AsyncIterator[str]:
        try:
            async for chunk in self._stream:
                if chunk.usage is not None:
                    self.usage = {
                        "prompt_tokens": chunk.usage.prompt_tokens,
                        "completion_tokens": chunk.usage.completion_tokens,
                        "total_tokens": chunk.usage.total_tokens,
                    }
                for choice in chunk.choices[:1]:
                    if choice.finish_reason is not None:
                        self.finish_reason = choice.finish_reason
                    if choice.delta is not None and choice.delta.content:
                        yield choice.delta.content
        except Exception as exc:
            raise model_failure(exc, self._timeout_s) from exc
        if self.finish_reason is None:
            # The server closed a well-formed stream without ever saying it had finished.
            raise ModelError("The model server ended the answer without finishing it.")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shielded: this runs while the request is being cancelled, and an interrupted close
        # would leave the upstream request running until garbage collection.
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._stream.close()


def _wire(messages: list[ChatMessage]) -> list[ChatCompletionMessageParam]:
    """Our messages as the SDK's typed message params (the same JSON shape)."""
    return cast("list[ChatCompletionMessageParam]", list(messages))


class OpenAILLM:
    """An OpenAI-compatible server through the official SDK (`AsyncOpenAI`), streaming."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        *,
        timeout_s: float,
        max_retries: int,
        temperature: float,
    ) -> None:
        from openai import AsyncOpenAI

        self._client = AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )
        self._model = model
        self._timeout_s = timeout_s
        self._temperature = temperature

    async def stream(self, messages: list[ChatMessage], *, max_tokens: int) -> CompletionStream:
        try:
            stream = await self._client.chat.completions.create(
                model=self._model,
                messages=_wire(messages),
                max_tokens=max_tokens,
                temperature=self._temperature,
                stream=True,
                stream_options={"include_usage": True},
            )
        except Exception as exc:
            raise model_failure(exc, self._timeout_s) from exc
        return _OpenAIStream(stream, self._timeout_s)

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int) -> str:
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=_wire(messages),
                max_tokens=max_tokens,
                temperature=0.0,
                stream=False,
            )
        except Exception as exc:
            raise model_failure(exc, self._timeout_s) from exc
        if not response.choices:
            raise ModelError("The model server returned no answer.")
        return response.choices[0].message.content or ""

    async def aclose(self) -> None:
        await self._client.close()


def make_llm(settings: Settings) -> LLM | None:
    """The configured model server, or None for the built-in extractive answerer."""
    if not settings.llm_base_url:
        return None
    return OpenAILLM(
        settings.llm_base_url,
        settings.llm_model,
        settings.llm_api_key.get_secret_value(),
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        temperature=settings.llm_temperature,
    )
