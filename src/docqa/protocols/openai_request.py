"""What an OpenAI chat-completions request asks of docqa: the scope (from the model name) and the
question with its history (from the messages). Everything docqa cannot honour is refused here
with a sentence that names the parameter, never ignored in silence."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from docqa.answer import ChatMessage, Question
from docqa.protocols.errors import InvalidChat, ModelNotFound, UnsupportedParameter

MODEL = "docqa"
_ONE_DOCUMENT = re.compile(r"docqa:([A-Za-z0-9._-]{1,64})")
# The limits of `/api/v1/ask`: a question of at most 2000 characters, 50 earlier turns of at
# most 20,000. A chat client sends the whole conversation every time, so older turns are
# dropped rather than refused (the prompt keeps only the newest ones anyway).
MAX_QUESTION_CHARS = 2000
MAX_HISTORY_TURNS = 50
MAX_TURN_CHARS = 20_000


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None
    tool_calls: list[Any] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The parameters docqa reads. Sampling parameters (`temperature`, `top_p`, `max_tokens`,
    `stop`, `seed`, penalties) and `user` are accepted and left to the server's own settings
    (`DOCQA_LLM_*`); other unknown fields are accepted and ignored, as OpenAI-compatible
    servers do, so that clients which add their own fields keep working."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(max_length=200, description="`docqa`, or `docqa:<document_id>`")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def document_scope(model: str) -> tuple[str, ...]:
    """The document ids a model name stands for: none (all ready documents) or one."""
    if model == MODEL:
        return ()
    if match := _ONE_DOCUMENT.fullmatch(model):
        return (match.group(1),)
    raise ModelNotFound(
        f"There is no model '{model}': use 'docqa' for all your ready documents, or "
        "'docqa:<document_id>' for one of them (GET /v1/models lists them).",
        param="model",
    )


def refuse_unsupported(body: ChatRequest) -> None:
    """Raise `UnsupportedParameter` for the first parameter docqa cannot honour."""
    tools = "docqa answers from your documents and cannot call tools or functions"
    if body.tools or body.functions:
        raise UnsupportedParameter(f"{tools}: remove `tools`.", param="tools")
    for name, value in (("tool_choice", body.tool_choice), ("function_call", body.function_call)):
        if value not in (None, "none"):
            raise UnsupportedParameter(f"{tools}: remove `{name}`.", param=name)
    if body.n not in (None, 1):
        raise UnsupportedParameter("docqa writes one answer per request: `n` must be 1.", param="n")
    if body.logprobs or body.top_logprobs:
        param = "logprobs" if body.logprobs else "top_logprobs"
        raise UnsupportedParameter(
            f"docqa does not report log probabilities: remove `{param}`.", param=param
        )
    kind = (body.response_format or {}).get("type", "text")
    if kind != "text":
        raise UnsupportedParameter(
            f"docqa answers in text with citations, not `{kind}`: remove `response_format`.",
            param="response_format",
        )
    if body.audio is not None or (body.modalities and set(body.modalities) != {"text"}):
        param = "audio" if body.audio is not None else "modalities"
        raise UnsupportedParameter(f"docqa answers in text only: remove `{param}`.", param=param)
    if body.prediction is not None:
        raise UnsupportedParameter(
            "docqa writes its answers from your documents: remove `prediction`.",
            param="prediction",
        )


def _text(message: ChatMessageIn, index: int) -> str:
    if isinstance(message.content, str):
        return message.content
    if message.content is None:
        raise InvalidChat(f"messages[{index}] has no content.", param=f"messages[{index}]")
    texts: list[str] = []
    for part in message.content:
        if part.type in ("text", "refusal"):
            texts.append(part.text or str(getattr(part, "refusal", "") or ""))
            continue
        raise UnsupportedParameter(
            f"docqa reads text only: messages[{index}] holds a part of type '{part.type}'.",
            param=f"messages[{index}].content",
        )
    return "\n".join(texts)


def to_question(body: ChatRequest) -> Question:
    """The last user message is the question; earlier user and assistant messages are its
    history. System and developer messages are not passed on: docqa's own instructions keep
    the answer to the sources and their citations."""
    refuse_unsupported(body)
    document_ids = document_scope(body.model)
    turns: list[ChatMessage] = []
    for index, message in enumerate(body.messages):
        if message.role in ("system", "developer"):
            continue
        if message.role in ("tool", "function") or message.tool_calls:
            raise UnsupportedParameter(
                f"docqa cannot call tools: messages[{index}] is a tool call or a tool result.",
                param=f"messages[{index}]",
            )
        if message.role == "user":
            turns.append({"role": "user", "content": _text(message, index)})
        elif message.role == "assistant":
            turns.append({"role": "assistant", "content": _text(message, index)})
        else:
            raise InvalidChat(
                f"messages[{index}] has the role '{message.role}'; docqa reads 'system', "
                "'developer', 'user' and 'assistant' messages.",
                param=f"messages[{index}].role",
            )
    if not turns or turns[-1]["role"] != "user":
        raise InvalidChat("The last message must be the user's question.", param="messages")
    question = turns[-1]["content"].strip()
    if not question:
        raise InvalidChat("The question (the last user message) is empty.", param="messages")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidChat(
            f"The question (the last user message) is over {MAX_QUESTION_CHARS} characters.",
            param="messages",
        )
    history: list[ChatMessage] = [
        {"role": turn["role"], "content": turn["content"][:MAX_TURN_CHARS]}
        for turn in turns[:-1][-MAX_HISTORY_TURNS:]
    ]
    return Question(question, document_ids, None, tuple(history))
