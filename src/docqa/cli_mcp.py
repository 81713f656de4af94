"""`docqa mcp`: docqa's MCP tools over stdio, for assistants that start MCP servers themselves.

Stdout carries the protocol and nothing else: notices and logs go to stderr. The server is found
as for the other client commands (see `docqa.client`); the relaying is `docqa.protocols.
mcp_bridge`. Only typer and the standard library are imported at the top (see `docqa.cli`).
"""

from __future__ import annotations

from docqa.cli_client import KeyOpt, ServerOpt, VerboseOpt


def mcp(server: ServerOpt = None, api_key: KeyOpt = None, verbose: VerboseOpt = 0) -> None:
    """Serve docqa's tools (search_documents, ask, list_documents, get_page) to an MCP client
    over stdin and stdout. Add it to the assistant's MCP servers as the command `docqa mcp`."""
    import anyio
    import typer

    from docqa.cli_client import _in_process_settings, notice
    from docqa.client import ClientError, find_default_server, local_server
    from docqa.protocols.mcp_bridge import serve_stdio

    async def main(url: str | None) -> None:
        if url:
            await serve_stdio(url, api_key)
            return
        settings = _in_process_settings(verbose, worker=False)
        async with local_server(settings) as local:
            await serve_stdio(local, None)

    try:
        anyio.run(main, server or find_default_server())
    except ClientError as exc:
        notice(str(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
