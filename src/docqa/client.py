"""How the CLI reaches an API.

In this order: the URL given (`--server`, or `DOCQA_SERVER`), then a docqa server answering on
this machine's default port (127.0.0.1:8000, or `DOCQA_LOCAL_PORT`), told apart from anything
else on that port by its `/healthz` body. Only when there is none does the CLI serve this
package's own app in-process, on a private loopback port, so that streaming behaves exactly as
it does against a remote server.

Transport failures (nothing listening, a refused or broken connection, a bad URL) become
`ClientError`, whose message is one sentence the CLI prints as it is.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from docqa.settings import Settings

DEFAULT_PORT = 8000
PORT_ENV = "DOCQA_LOCAL_PORT"
# Connection refused comes back at once; this only bounds a port that accepts and then hangs.
PROBE_TIMEOUT_S = 0.5


class ClientError(Exception):
    """A failure to reach or talk to the server, as one sentence for a person."""


def default_port() -> int:
    """The port `docqa serve` uses by default and where client commands look for a server."""
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ClientError(f"{PORT_ENV} must be a port number, not {raw!r}.")
    return int(raw)


def default_server_url() -> str:
    return f"http://127.0.0.1:{default_port()}"


def find_default_server() -> str | None:
    """The URL of a docqa server on the default port, or None if nothing of ours answers."""
    url = default_server_url()
    try:
        response = httpx.get(f"{url}/healthz", timeout=PROBE_TIMEOUT_S, verify=_verify(url))
        body = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return url if isinstance(body, dict) and body.get("service") == "docqa" else None


def _verify(url: str) -> bool:
    # httpx loads the CA bundle for every client, TLS or not (about 25 ms, a tenth of the CLI's
    # start-up budget). A plain http:// URL has no certificate to check; https:// is verified.
    return not url.lower().startswith("http://")


def display_url(url: str) -> str:
    """The URL without credentials (a base URL may carry an API key as its user name)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    # "[Errno 111] Connection refused" reads better as "connection refused".
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text.splitlines()[0])
    return text[:1].lower() + text[1:]


@contextlib.asynccontextmanager
async def api_client(server_url: str, api_key: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on `server_url`; transport errors in the block become `ClientError`."""
    shown = display_url(server_url)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = httpx.Timeout(30.0, read=None)  # answers and progress streams may idle for long
    try:
        async with httpx.AsyncClient(
            base_url=server_url, headers=headers, timeout=timeout, verify=_verify(server_url)
        ) as client:
            yield client
    except httpx.UnsupportedProtocol:
        raise ClientError(f"{shown} is not an http:// or https:// URL.") from None
    except httpx.InvalidURL as exc:
        raise ClientError(f"{shown} is not a valid URL ({_reason(exc)}).") from None
    except httpx.ConnectTimeout:
        raise ClientError(f"Cannot reach the docqa server at {shown}: no answer.") from None
    except httpx.ConnectError as exc:
        raise ClientError(f"Cannot reach the docqa server at {shown}: {_reason(exc)}.") from None
    except httpx.TimeoutException:
        raise ClientError(f"The docqa server at {shown} stopped answering.") from None
    except httpx.TransportError as exc:
        raise ClientError(f"The connection to {shown} broke: {_reason(exc)}.") from None


@contextlib.asynccontextmanager
async def local_server(settings: Settings) -> AsyncIterator[str]:
    """Run the docqa app on 127.0.0.1 with a free port for the duration of the block."""
    import asyncio

    import uvicorn

    from docqa.app import create_app

    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        # uvicorn reports a failed start-up with sys.exit(3), after logging why; in a task, a
        # SystemExit would escape the event loop and end the CLI with a traceback.
        with contextlib.suppress(SystemExit):
            await server.serve()

    task = asyncio.create_task(serve())
    try:
        while not server.started:
            if task.done():
                await task  # re-raises a failure of uvicorn itself
                # The app's own failure was logged by uvicorn at ERROR, so it shows above.
                raise ClientError(
                    "Could not start docqa in this process; the reason is logged above."
                )
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


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
