"""The MCP server through the `mcp` SDK's own client, over streamable HTTP (`/mcp` on a real
server process) and over stdio (`python -m docqa mcp` spawned as an assistant would): the tools
listed and each one called, an unknown document, a bad key, and the same answers as
`/api/v1/ask`, through the extractive answerer and through the mock model server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from tests.asking import Doc, ask, require_extractive
from tests.conftest import _log_dir
from tests.mock_llm import MockLLM
from tests.stack import Stack, free_port, start_api

TOOLS = {"search_documents", "ask", "list_documents", "get_page"}
BAD_KEY = "dq_" + "x" * 43
BAD_KEY_SENTENCE = "This API key is not valid (unknown or revoked)."


@dataclass(frozen=True)
class Server:
    """A docqa server as the tests reach it: its root URL and the key it needs (if any)."""

    root: str
    key: str | None
    env: dict[str, str]

    def http(self) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {self.key}"} if self.key else {}
        return httpx.AsyncClient(base_url=self.root, headers=headers, timeout=60)


def server_of(base_url: str, env: dict[str, str]) -> Server:
    url = httpx.URL(base_url)  # a stack URL may carry its key as user name
    root = str(url.copy_with(username=None, password=None)).rstrip("/")
    return Server(root, url.username or None, env)


@contextlib.asynccontextmanager
async def over_http(server: Server, key: str | None = None) -> AsyncIterator[Client]:
    key = key or server.key
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(f"{server.root}/mcp", http_client=http)) as client,
    ):
        yield client


@contextlib.asynccontextmanager
async def over_stdio(
    server: Server, errlog: TextIO, key: str | None = None, *, in_process: bool = False
) -> AsyncIterator[Client]:
    """`docqa mcp` as a desktop assistant runs it: a child process speaking MCP on stdio."""
    key = key or server.key
    env = dict(server.env)
    if key:
        env["DOCQA_API_KEY"] = key
    args = ["-m", "docqa", "mcp"]
    if in_process:
        env["DOCQA_LOCAL_PORT"] = str(free_port())  # nothing there: the app runs in-process
    else:
        args += ["--server", server.root]
    params = StdioServerParameters(command=sys.executable, args=args, env=env)
    async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=120) as client:
        yield client


Connect = Callable[..., contextlib.AbstractAsyncContextManager[Client]]


@pytest.fixture(scope="module")
def errlog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextIO]:
    path = _log_dir(tmp_path_factory) / f"docqa-mcp-{uuid.uuid4().hex[:6]}.log"
    with path.open("a") as f:
        yield f


@pytest.fixture(params=["http", "stdio"])
def connect(request: pytest.FixtureRequest, errlog: TextIO) -> Connect:
    """Either transport: `connect(server, key=None)` opens an MCP client session."""
    if request.param == "http":
        return over_http
    return lambda server, key=None: over_stdio(server, errlog, key)


@pytest.fixture(scope="module")
def extractive(stack: Stack) -> Server:
    return server_of(stack.base_url, stack.env)


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


def without_url(source: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in source.items() if k != "url"}


def page_link(root: str, document_id: str, page: int) -> str:
    return f"{root}/api/v1/documents/{document_id}/file#page={page}"


# --- the tools, over both transports -------------------------------------------------------


async def test_the_four_tools_are_listed(connect: Connect, extractive: Server) -> None:
    async with connect(extractive) as client:
        listed = (await client.list_tools()).tools
    by_name = {tool.name: tool for tool in listed}
    assert set(by_name) == TOOLS
    assert set(by_name["search_documents"].input_schema["properties"]) == {
        "query",
        "document_ids",
        "top_k",
    }
    assert by_name["search_documents"].input_schema["required"] == ["query"]
    assert set(by_name["ask"].input_schema["properties"]) == {"question", "document_ids"}
    assert "status" in by_name["list_documents"].input_schema["properties"]
    assert set(by_name["get_page"].input_schema["required"]) == {"document_id", "page"}
    for tool in listed:
        assert tool.description
        assert tool.output_schema is not None
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True


async def test_search_documents(
    connect: Connect, extractive: Server, ask_docs: dict[str, Doc]
) -> None:
    ferry = ask_docs["ferry"]
    async with connect(extractive) as client:
        found = ok(
            await client.call_tool(
                "search_documents",
                {"query": "Kvarner shipyard", "document_ids": [ferry.document_id], "top_k": 2},
            )
        )
    passages = found["passages"]
    assert 1 <= len(passages) <= 2
    top = passages[0]
    assert (top["document_id"], top["page"], top["n"]) == (ferry.document_id, 2, 1)
    assert "Kvarner shipyard" in top["text"]
    assert ferry.page_holds(top["page"], top["text"])
    assert top["url"] == page_link(extractive.root, ferry.document_id, 2)
    assert top["score"] >= passages[-1]["score"]


async def test_ask_gives_the_answer_of_api_v1_ask(
    connect: Connect, extractive: Server, ask_docs: dict[str, Doc]
) -> None:
    obs = ask_docs["observatory"]
    question = "When was the main telescope of the Harwick Observatory installed?"
    async with extractive.http() as http:
        asked = await ask(http, {"question": question, "document_ids": [obs.document_id]})
    require_extractive(asked)
    async with connect(extractive) as client:
        result = await client.call_tool(
            "ask", {"question": question, "document_ids": [obs.document_id]}
        )
    answer = ok(result)
    assert answer["answer"] == asked.text
    assert "1936" in answer["answer"]
    assert answer["finish_reason"] == "stop"
    assert answer["mode"] == "extractive"
    assert set(answer) >= set(asked.done), "every field of the done event is carried"
    assert [without_url(s) for s in answer["sources"]] == asked.sources
    for source in answer["sources"]:
        assert source["url"] == page_link(extractive.root, source["document_id"], source["page"])
    assert json.loads(text_of(result)) == answer, "the text block holds the same, as JSON"


async def test_list_documents(
    connect: Connect, extractive: Server, ask_docs: dict[str, Doc]
) -> None:
    async with connect(extractive) as client:
        listed = ok(await client.call_tool("list_documents", {"status": "ready"}))
        bad = await client.call_tool("list_documents", {"status": "sleeping"})
    by_id = {d["document_id"]: d for d in listed["documents"]}
    for doc in ask_docs.values():
        info = by_id[doc.document_id]
        assert info["status"] == "ready"
        assert info["page_count"] == len(doc.pages)
        assert info["url"] == f"{extractive.root}/api/v1/documents/{doc.document_id}/file"
    assert {d["status"] for d in listed["documents"]} == {"ready"}
    assert bad.is_error


async def test_get_page(connect: Connect, extractive: Server, ask_docs: dict[str, Doc]) -> None:
    ferry = ask_docs["ferry"]
    async with extractive.http() as http:
        api = (await http.get(f"/api/v1/documents/{ferry.document_id}/pages/2")).json()
    async with connect(extractive) as client:
        page = ok(await client.call_tool("get_page", {"document_id": ferry.document_id, "page": 2}))
    assert page["text"] == api["text"]
    assert "Kvarner shipyard" in page["text"]
    assert (page["page"], page["ocr"], page["tables"]) == (2, api["ocr"], api["tables"])
    assert page["url"] == page_link(extractive.root, ferry.document_id, 2)


async def test_unknown_documents_and_pages_are_tool_errors_with_the_api_sentences(
    connect: Connect, extractive: Server, ask_docs: dict[str, Doc]
) -> None:
    missing = f"nope-{uuid.uuid4().hex[:8]}"
    ferry = ask_docs["ferry"].document_id
    async with extractive.http() as http:
        no_doc = (await http.get(f"/api/v1/documents/{missing}/pages/1")).json()["detail"]
        no_page = (await http.get(f"/api/v1/documents/{ferry}/pages/99")).json()["detail"]
    calls = [
        ("ask", {"question": "Who built it?", "document_ids": [missing]}, no_doc),
        ("search_documents", {"query": "ferry", "document_ids": [missing]}, no_doc),
        ("get_page", {"document_id": missing, "page": 1}, no_doc),
        ("get_page", {"document_id": ferry, "page": 99}, no_page),
    ]
    async with connect(extractive) as client:
        for tool, arguments, sentence in calls:
            result = await client.call_tool(tool, arguments)
            assert result.is_error, (tool, arguments)
            assert text_of(result) == sentence


# --- keys: an API of this module's own, in keys mode --------------------------------------------


@dataclass
class Keyed:
    server: Server
    database_url: str

    async def new_key(self) -> str:
        from docqa import auth
        from docqa.db.engine import open_database
        from docqa.settings import Settings

        db = await open_database(Settings(database_url=self.database_url), pool_size=1)
        try:
            return (await auth.create_key(db, name=f"mcp-{uuid.uuid4().hex[:6]}")).secret
        finally:
            await db.close()


@pytest.fixture(scope="module")
def keyed(
    stack: Stack, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Keyed]:
    keyed = Keyed(Server("", None, stack.env), database_url)
    asyncio.run(keyed.new_key())  # a keys-mode server will not start while no key exists
    env = stack.env | {"DOCQA_AUTH": "keys"}
    proc, url = start_api(env, _log_dir(tmp_path_factory), name="api-mcp-keys")
    keyed.server = Server(url, None, stack.env)
    try:
        yield keyed
    finally:
        proc.stop()


def leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


async def test_a_bad_key_over_http_is_refused_with_the_api_sentence(keyed: Keyed) -> None:
    refusals: list[BaseException] = []
    try:
        async with over_http(keyed.server, BAD_KEY) as client:
            await client.list_tools()
    except* MCPError as group:  # the SDK's task groups wrap what its connection raises
        refusals = leaves(group)
    assert [str(getattr(e, "message", e)) for e in refusals] == [BAD_KEY_SENTENCE]
    async with httpx.AsyncClient(base_url=keyed.server.root) as http:
        response = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="docqa"'
    error = response.json()["error"]
    assert error["data"]["code"] == "unauthorized"
    assert error["message"].startswith("This server needs an API key")


async def test_a_bad_key_over_stdio_is_an_mcp_error_with_the_api_sentence(
    keyed: Keyed, errlog: TextIO
) -> None:
    async with over_stdio(keyed.server, errlog, BAD_KEY) as client:
        with pytest.raises(MCPError) as caught:
            await client.list_tools()
        assert caught.value.message == BAD_KEY_SENTENCE
        result = await client.call_tool("list_documents", {})
        assert result.is_error
        assert text_of(result) == BAD_KEY_SENTENCE


async def test_stdio_with_no_server_there_says_so(errlog: TextIO, stack: Stack) -> None:
    gone = Server(f"http://127.0.0.1:{free_port()}", None, stack.env)
    async with over_stdio(gone, errlog) as client:
        result = await client.call_tool("list_documents", {})
    assert result.is_error
    assert text_of(result).startswith(f"Cannot reach the docqa server at {gone.root}/mcp: ")


async def test_a_good_key_sees_only_its_owners_documents(
    connect: Connect, keyed: Keyed, ask_docs: dict[str, Doc]
) -> None:
    key = await keyed.new_key()
    async with connect(keyed.server, key) as client:
        listed = ok(await client.call_tool("list_documents", {}))
        theirs = await client.call_tool(
            "get_page", {"document_id": ask_docs["ferry"].document_id, "page": 1}
        )
    assert listed == {"documents": [], "next_cursor": None}
    assert theirs.is_error
    assert text_of(theirs) == f"There is no document with the id '{ask_docs['ferry'].document_id}'."


# --- with a model server: the mock --------------------------------------------------------------


async def test_ask_through_the_model_server(
    connect: Connect, llm_api: str, stack: Stack, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    server = server_of(llm_api, stack.env)
    ferry = ask_docs["ferry"]
    tag = f"zq{uuid.uuid4().hex[:10]}"
    reply = "It was built in 1987 at the Kvarner shipyard [1]."
    await mock_llm.script({"match": tag, "text": reply, "times": 2})
    question = f"Where was the Lindqvist ferry built? {tag}"
    async with server.http() as http:
        asked = await ask(http, {"question": question, "document_ids": [ferry.document_id]})
    asked.assert_well_formed()
    async with connect(server) as client:
        answer = ok(
            await client.call_tool(
                "ask", {"question": question, "document_ids": [ferry.document_id]}
            )
        )
    assert answer["answer"] == reply == asked.text
    assert answer["mode"] == "llm"
    assert answer["usage"]["completion_tokens"] == len(reply.split())
    assert [without_url(s) for s in answer["sources"]] == asked.sources
    assert len(await mock_llm.requests(tag)) == 2


# --- `docqa mcp` with no server: the app in-process, as the other client commands do -------------


async def test_stdio_without_a_server_runs_the_app_in_process(
    extractive: Server, ask_docs: dict[str, Doc], errlog: TextIO, tmp_path: Path
) -> None:
    if extractive.key:
        pytest.skip("the in-process app uses the environment's auth mode, not a session key")
    async with over_stdio(extractive, errlog, in_process=True) as client:
        listed = ok(await client.call_tool("list_documents", {"status": "ready"}))
        page = ok(
            await client.call_tool(
                "get_page", {"document_id": ask_docs["ferry"].document_id, "page": 2}
            )
        )
    assert {d.document_id for d in ask_docs.values()} <= {
        d["document_id"] for d in listed["documents"]
    }
    assert "Kvarner shipyard" in page["text"]
    assert page["url"].startswith("http://127.0.0.1:")
