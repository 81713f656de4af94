"""The MCP tools: search the caller's documents, answer a question, list the documents, read a
page. They use the very services behind `/api/v1` (retrieval, `Answerer.start`, the document
and page records), under the caller's key, owner and rate limits, and fail as MCP tool errors
carrying the API's own sentences. Every result links the pages it names.

Each tool returns a `CallToolResult` typed with its result model (the SDK's way to publish an
output schema while building the result itself), so that an error result carries the API's
sentence as it is.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from docqa import documents, pages
from docqa.answer import Answerer, Question
from docqa.answer.reply import source_view
from docqa.answer.service import document_scope
from docqa.auth import Principal
from docqa.errors import DocqaError, InvalidRequest
from docqa.protocols.answering import Relay
from docqa.protocols.citations import file_url, page_url
from docqa.ratelimit import Limiter
from docqa.search.retrieve import retrieve
from docqa.state import AppState

# The request state member the `/mcp` endpoint sets once the key is checked.
CALLER_KEY = "docqa_caller"
LIST_LIMIT = 100

DocumentIds = Annotated[
    list[str] | None,
    Field(max_length=100, description="Only these documents (default: every ready one)."),
]


class Passage(BaseModel):
    """An item of `/api/v1/ask`'s `sources` event, with a link to its page."""

    model_config = ConfigDict(extra="allow")

    n: int = Field(description="the number an answer cites it by, as [n]")
    document_id: str
    filename: str
    page: int = Field(description="the page (or slide, sheet part, section) it is on")
    chunk_id: int
    score: float
    text: str
    url: str = Field(description="the original file, opened at this page")


class SearchResult(BaseModel):
    query: str
    passages: list[Passage]


class AskResult(BaseModel):
    """The answer, its sources, and the fields of `/api/v1/ask`'s `done` event (finish_reason,
    mode, usage, timings_ms, and where the server gives them answered, quotes, citations)."""

    model_config = ConfigDict(extra="allow")

    answer: str = Field(description="the answer, citing its sources as [n]")
    sources: list[Passage]
    finish_reason: str
    mode: str


class DocumentInfo(BaseModel):
    document_id: str
    filename: str
    status: str
    page_count: int | None
    chunk_count: int
    created_at: str
    error: dict[str, Any] | None = Field(description="why processing failed, if it did")
    url: str = Field(description="the original file")


class DocumentList(BaseModel):
    documents: list[DocumentInfo]
    next_cursor: str | None = Field(description="pass it as `cursor` for the next, older ones")


class PageText(BaseModel):
    model_config = ConfigDict(extra="allow")

    document_id: str
    page: int
    text: str
    ocr: bool = Field(description="whether the text was recognised from an image")
    tables: int
    url: str


@dataclass(frozen=True)
class Call:
    """Who is calling, on which server: what every tool needs."""

    state: AppState
    caller: Principal
    base_url: str

    @property
    def owner(self) -> str:
        return self.caller.owner_id

    def limiter(self) -> Limiter | None:
        return Limiter(self.state.db, self.state.settings) if self.caller.key_id else None

    def answerer(self) -> Answerer:
        if self.state.answerer is None:
            raise RuntimeError("the application was started without an answerer")
        return self.state.answerer


def _call(ctx: Context) -> Call:
    """The HTTP request that carried this call, as the `/mcp` endpoint left it."""
    request = ctx.request_context.request
    if not isinstance(request, Request):
        raise ToolError("docqa's tools run on its HTTP endpoint, /mcp.")
    return Call(request.app.state.docqa, getattr(request.state, CALLER_KEY), str(request.base_url))


async def _result(work: Awaitable[BaseModel]) -> CallToolResult:
    """The tool's result: structured, with the same JSON as text for clients that read only
    text. A domain error is an error result whose text is the sentence the HTTP API sends (the
    SDK would prefix a raised error with "Error executing tool ...")."""
    try:
        result = await work
    except DocqaError as exc:
        text = TextContent(type="text", text=exc.detail)
        return CallToolResult(content=[text], is_error=True)
    data = result.model_dump(mode="json")
    text = TextContent(type="text", text=json.dumps(data, ensure_ascii=False, indent=2))
    return CallToolResult(content=[text], structured_content=data)


def _passages(sources: list[dict[str, Any]], base_url: str) -> list[Passage]:
    return [
        Passage.model_validate(
            {**source, "url": page_url(base_url, source["document_id"], source["page"])}
        )
        for source in sources
    ]


async def search_documents(
    query: Annotated[str, Field(min_length=1, max_length=2000, description="What to look for.")],
    ctx: Context,
    document_ids: DocumentIds = None,
    top_k: Annotated[
        int | None, Field(ge=1, le=50, description="How many passages (default 6).")
    ] = None,
) -> Annotated[CallToolResult, SearchResult]:
    """Search your documents: the passages that best match the query (hybrid keyword and
    meaning search, as answers use), each with its document, page, score and a link to the
    page."""
    return await _result(_search(_call(ctx), query, document_ids or (), top_k))


async def _search(
    call: Call, query: str, document_ids: Sequence[str], top_k: int | None
) -> SearchResult:
    if not query.strip():
        raise InvalidRequest("The query is empty.")
    if limiter := call.limiter():
        await limiter.asks(str(call.caller.key_id))
    pks = await document_scope(call.state.db, call.owner, document_ids)
    hits = await retrieve(
        call.state.db,
        call.state.embedder,
        owner_id=call.owner,
        document_pks=pks,
        question=query.strip(),
        top_k=top_k or call.state.settings.ask_top_k,
        # Reranked as answers are, when a rerank server is configured.
        reranker=call.state.reranker,
        rerank_candidates=call.state.settings.rerank_candidates,
    )
    views = [source_view(n, hit) for n, hit in enumerate(hits, start=1)]
    return SearchResult(query=query, passages=_passages(views, call.base_url))


async def ask(
    question: Annotated[
        str, Field(min_length=1, max_length=2000, description="The question to answer.")
    ],
    ctx: Context,
    document_ids: DocumentIds = None,
) -> Annotated[CallToolResult, AskResult]:
    """Answer a question from your documents, as docqa's own `ask` does: the answer cites its
    sources as [n], and each source comes with its page and a link to it."""
    return await _result(_ask(_call(ctx), question, document_ids or (), time.perf_counter()))


async def _ask(call: Call, question: str, document_ids: Sequence[str], started: float) -> AskResult:
    if not question.strip():
        raise InvalidRequest("The question is empty.")
    async with contextlib.AsyncExitStack() as stack:
        if limiter := call.limiter():
            await limiter.asks(str(call.caller.key_id))
            await stack.enter_async_context(limiter.stream(str(call.caller.key_id)))
        answer = await call.answerer().start(
            call.owner, Question(question.strip(), tuple(document_ids))
        )
        relay = Relay(answer, started, "mcp")
        try:
            await relay.collect()
        except Exception as exc:
            raise relay.failure(exc) from exc
        finally:
            await relay.close()  # also when the client cancels: the model request stops
    sources = answer.source_views()
    done = relay.done()
    if isinstance(quotes := done.get("quotes"), list):
        done["quotes"] = _linked_quotes(quotes, sources, call.base_url)
    return AskResult(answer=relay.text, sources=_passages(sources, call.base_url), **done)


def _linked_quotes(quotes: list[Any], sources: list[dict[str, Any]], base_url: str) -> list[Any]:
    by_n = {s["n"]: s for s in sources}
    linked: list[Any] = []
    for quote in quotes:
        source = by_n.get(quote.get("n")) if isinstance(quote, Mapping) else None
        if source is None:
            linked.append(quote)
            continue
        page = quote.get("page", source["page"])
        linked.append({**quote, "url": page_url(base_url, source["document_id"], page)})
    return linked


async def list_documents(
    ctx: Context,
    status: Annotated[
        Literal["queued", "processing", "ready", "failed"] | None,
        Field(description="Only documents with this status."),
    ] = None,
    cursor: Annotated[str | None, Field(description="From a previous `next_cursor`.")] = None,
) -> Annotated[CallToolResult, DocumentList]:
    """List your documents, newest first (100 at a time), with their status and page count."""
    return await _result(_list(_call(ctx), status, cursor))


async def _list(call: Call, status: str | None, cursor: str | None) -> DocumentList:
    docs, next_cursor = await documents.list_documents(
        call.state.db, call.owner, limit=LIST_LIMIT, cursor=cursor, status=status
    )
    infos = []
    for doc in docs:
        view = documents.document_view(doc)
        infos.append(
            DocumentInfo(
                document_id=doc.document_id,
                filename=doc.filename,
                status=doc.status,
                page_count=doc.page_count,
                chunk_count=doc.chunk_count,
                created_at=view["created_at"],
                error=view["error"],
                url=file_url(call.base_url, doc.document_id),
            )
        )
    return DocumentList(documents=infos, next_cursor=next_cursor)


async def get_page(
    document_id: Annotated[str, Field(min_length=1, max_length=64)],
    page: Annotated[int, Field(ge=1, le=1_000_000, description="1-based page number.")],
    ctx: Context,
) -> Annotated[CallToolResult, PageText]:
    """The text docqa read from one page of a document (a slide, sheet part or section for
    formats without pages), whether it came from OCR, and how many tables it holds."""
    return await _result(_page(_call(ctx), document_id, page))


async def _page(call: Call, document_id: str, page: int) -> PageText:
    view = await pages.read_page(call.state.db, call.owner, document_id, page)
    url = page_url(call.base_url, document_id, page)
    return PageText.model_validate({**view.public(), "document_id": document_id, "url": url})


TOOLS = (search_documents, ask, list_documents, get_page)
