"""How the CLI reaches an API: a server given by URL, or this package's own app, served
in-process on a private loopback port (so streaming behaves exactly as it does remotely)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import httpx
import uvicorn

from docqa.settings import Settings


@contextlib.asynccontextmanager
async def local_server(settings: Settings) -> AsyncIterator[str]:
    """Run the docqa app on 127.0.0.1 with a free port for the duration of the block."""
    from docqa.app import create_app

    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task  # re-raises a startup failure
                raise RuntimeError("the in-process server stopped during start-up")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def api_client(
    settings: Settings, server_url: str | None, api_key: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = httpx.Timeout(30.0, read=None)
    if server_url:
        async with httpx.AsyncClient(base_url=server_url, headers=headers, timeout=timeout) as c:
            yield c
        return
    async with (
        local_server(settings) as url,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout) as client,
    ):
        yield client


_LINE_END = re.compile(r"\r\n|\r|\n")


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """The `(event, data)` pairs of a server-sent event stream, parsed as WHATWG specifies:
    lines end at CR, LF or CRLF only; several `data:` lines of one event join with newlines;
    comments (`: ping`) are skipped; the event type defaults to `message`."""
    event, buffer = "", ""
    data: list[str] = []
    async for text in response.aiter_text():
        buffer += text
        while (match := _LINE_END.search(buffer)) is not None:
            if match.group() == "\r" and match.end() == len(buffer):
                break  # maybe the first half of a CRLF split across reads
            line, buffer = buffer[: match.start()], buffer[match.end() :]
            if line == "":
                payload = "\n".join(data)
                if payload:  # the spec drops an event whose data is empty
                    yield event or "message", payload
                event, data = "", []
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
