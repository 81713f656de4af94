"""The MCP server, over streamable HTTP at `/mcp`: the four tools of `mcp_tools`, behind the same
API keys as `/api/v1` (`Authorization: Bearer`). `docqa mcp` serves the same tools over stdio by
relaying to this endpoint (`mcp_bridge`).

The transport is stateless: every request carries its key and is served on its own, so any API
replica can serve any MCP request, as for the rest of the API.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from docqa import __version__
from docqa.api.deps import get_caller
from docqa.api.errors import error_response
from docqa.errors import DocqaError
from docqa.protocols import MCP_INSTRUCTIONS, MCP_PATH
from docqa.protocols.mcp_tools import CALLER_KEY, TOOLS
from docqa.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

PATH = MCP_PATH
_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def build_mcp(settings: Settings) -> MCPServer:
    """The MCP server with docqa's tools, its streamable HTTP transport ready to run."""
    mcp: MCPServer = MCPServer("docqa", version=__version__, instructions=MCP_INSTRUCTIONS)
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    for tool in TOOLS:
        mcp.add_tool(tool, annotations=read_only, structured_output=True)
    # Without a key (auth off, which docqa allows on loopback only) nothing but the Host header
    # stops a web page from reaching this endpoint through DNS rebinding, so it is checked then.
    # With keys, the key is the protection and the server may have any name.
    local = settings.auth != "keys"
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=local,
        allowed_hosts=_LOOPBACK_HOSTS if local else [],
        allowed_origins=_LOOPBACK_ORIGINS if local else [],
    )
    # Called for the session manager it sets up (`mcp.session_manager`); `/mcp` is routed by
    # `McpEndpoint` below, which checks the key first, so the Starlette app it returns is unused.
    mcp.streamable_http_app(stateless_http=True, transport_security=security)
    return mcp


class McpEndpoint:
    """`/mcp` as a pure ASGI endpoint: the caller's key is checked as for `/api/v1` (a refusal
    leaves as docqa's error body, which `ErrorShape` turns into a JSON-RPC error), then the
    request goes to the MCP transport with the caller on its state, for the tools."""

    def __init__(self, mcp: MCPServer) -> None:
        self.mcp = mcp
        self.route: Route | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.route is not None:
            scope["route"] = self.route  # what the request log line and metrics name it by
        request = Request(scope, receive)
        try:
            caller = await get_caller(request, request.app.state.docqa, None)
        except DocqaError as exc:
            response = error_response(exc.status_code, exc.detail, exc.code, **exc.extra)
            response.headers.update(exc.response_headers())
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[CALLER_KEY] = caller
        await self.mcp.session_manager.handle_request(scope, receive, send)


Lifespan = Callable[["FastAPI"], contextlib.AbstractAsyncContextManager[None]]


def with_mcp(lifespan: Lifespan, mcp: MCPServer) -> Lifespan:
    """`lifespan`, then the MCP transport inside it (so it stops before the database closes)."""

    @contextlib.asynccontextmanager
    async def both(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app), mcp.session_manager.run():
            yield

    return both


def install_mcp(app: FastAPI, mcp: MCPServer) -> None:
    """Route `/mcp` (every method: POST for messages, GET and DELETE as the transport answers)."""
    endpoint = McpEndpoint(mcp)
    endpoint.route = Route(PATH, endpoint, include_in_schema=False)
    app.router.routes.append(endpoint.route)
