"""`docqa mcp`: docqa's MCP tools over stdio, for assistants that start their MCP servers as
child processes. It relays each request to a docqa server's `/mcp` endpoint (a running server,
or the app started in-process), so the tools, their results and their errors are exactly those
of the HTTP endpoint; only the transport differs.

The upstream connection opens on first use and again after a failure, so the assistant sees a
server that starts at once, and a refused key or an unreachable server as an error that says
so, in the sentence the API uses, rather than a process that died.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from docqa import __version__
from docqa.protocols import MCP_INSTRUCTIONS, MCP_PATH

# Answers with a model server can take a while (the SDK's default read timeout is 300 s).
_TIMEOUT = httpx2.Timeout(30.0, read=600.0)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _reason(exc: BaseException) -> str:
    text = (str(exc) or type(exc).__name__).splitlines()[0]
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text)


class Upstream:
    """The MCP client on `<server>/mcp`, connected when first needed and again after a failure.

    The SDK's client holds task groups, which must be entered and left by one task; so the
    connection lives in `keep()`, a task of its own for the life of the process, and the
    request handlers only ask it for a connection (`client()`) or to drop it (`forget()`).
    """

    def __init__(self, server_url: str, api_key: str | None) -> None:
        self.url = server_url.rstrip("/") + MCP_PATH
        self.api_key = api_key
        self._lock = anyio.Lock()
        self._client: Client | None = None
        self._error: MCPError | None = None
        self._wanted = anyio.Event()
        self._settled = anyio.Event()
        self._drop = anyio.Event()

    async def client(self) -> Client:
        """The open connection, or a new one; raises `MCPError` saying why there is none."""
        async with self._lock:
            if self._client is None:
                self._settled, self._error = anyio.Event(), None
                self._wanted.set()
                await self._settled.wait()
            if self._client is None:
                raise self._error or MCPError(types.INTERNAL_ERROR, "No connection.")
            return self._client

    def forget(self) -> None:
        """Drop the connection (after a failure), so that the next call makes a new one."""
        self._client = None
        self._drop.set()

    async def keep(self) -> None:
        """Open a connection whenever one is wanted, and hold it until it is dropped."""
        while True:
            await self._wanted.wait()
            self._wanted, self._drop = anyio.Event(), anyio.Event()
            try:
                async with self._connect() as client:
                    self._client = client
                    self._settled.set()
                    await self._drop.wait()
            except Exception as exc:
                self._error = self._failure(exc)
            finally:
                self._client = None
                self._settled.set()

    def _failure(self, exc: Exception) -> MCPError:
        """The server's refusal in its own sentence (a bad key, a limit), else why the server
        could not be reached. The SDK's task groups wrap what they raise in exception groups."""
        causes = _leaves(exc)
        refusal = next((c for c in causes if isinstance(c, MCPError)), None)
        if refusal is not None:
            return refusal
        reason = f"Cannot reach the docqa server at {self.url}: {_reason(causes[0])}."
        return MCPError(types.INTERNAL_ERROR, reason)

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[Client]:
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=_TIMEOUT) as http,
            Client(streamable_http_client(self.url, http_client=http)) as client,
        ):
            yield client


def bridge_server(upstream: Upstream) -> Server[Any]:
    """A low-level MCP server whose tools are the upstream's, each call relayed as it is."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        client = await upstream.client()
        try:
            return await client.list_tools(cursor=params.cursor if params else None)
        except MCPError:
            raise
        except Exception as exc:
            upstream.forget()
            raise MCPError(types.INTERNAL_ERROR, _reason(exc)) from exc

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            client = await upstream.client()
            return await client.call_tool(params.name, params.arguments)
        except MCPError as exc:
            return _tool_error(exc.message)
        except Exception as exc:
            upstream.forget()
            return _tool_error(f"The docqa server at {upstream.url} failed: {_reason(exc)}.")

    return Server(
        "docqa",
        version=__version__,
        instructions=MCP_INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _tool_error(sentence: str) -> types.CallToolResult:
    text = types.TextContent(type="text", text=sentence)
    return types.CallToolResult(content=[text], is_error=True)


async def serve_stdio(server_url: str, api_key: str | None) -> None:
    """Relay MCP over this process's stdin and stdout to `server_url` until stdin closes."""
    upstream = Upstream(server_url, api_key)
    server = bridge_server(upstream)
    async with anyio.create_task_group() as group:
        group.start_soon(upstream.keep)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
        group.cancel_scope.cancel()
