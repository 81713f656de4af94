"""`docqa docs list|show|rm`: the caller's documents, through the API (see `docqa.cli_client`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from docqa.cli_client import KeyOpt, ServerOpt, VerboseOpt, elide, fail, notice, out, run_client

if TYPE_CHECKING:
    import httpx

docs_app = typer.Typer(help="List, show and remove documents.", no_args_is_help=True)


@docs_app.command("list")
def docs_list(
    status: Annotated[
        str | None,
        typer.Option(metavar="STATUS", help="Only this status: queued, processing, ready, failed."),
    ] = None,
    server: ServerOpt = None,
    api_key: KeyOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """List your documents, newest first (tab-separated when piped)."""

    async def action(client: httpx.AsyncClient) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 200} | ({"status": status} if status else {})
        while True:
            response = await client.get("/api/v1/documents", params=params)
            if response.status_code != 200:
                raise fail(response)
            page = response.json()
            found += page["documents"]
            if not page["next_cursor"]:
                return found
            params["cursor"] = page["next_cursor"]

    rows = [
        (
            d["document_id"],
            d["filename"],
            d["status"],
            str(d["page_count"] or ""),
            str(d["chunk_count"]),
            f"{d['size_bytes'] / 1e6:.1f} MB",
        )
        for d in run_client(server, api_key, verbose, action)
    ]
    if not sys.stdout.isatty():  # piped: one tab-separated line per document, for scripts
        for row in rows:
            print("\t".join(row))
        return
    out().print(_documents_table(rows, out().width), soft_wrap=True, markup=False)


def _documents_table(rows: Sequence[Sequence[str]], width: int) -> Any:
    """Ids whole (they are pasted into `show`, `rm` and `--doc`); file names give way instead,
    and on a terminal too narrow for that each document takes two lines."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    headers = ("id", "filename", "status", "pages", "chunks", "size")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    gaps = 3 * (len(headers) - 1)  # a space of padding either side of a one-space rule
    room = width - (sum(widths) - widths[1] + gaps)  # what is left for the file names
    if room < 12:
        # Printed as plain lines with soft wrapping: a terminal narrower than an id wraps it
        # visually, and copying it still gives the whole id.
        lines = []
        for doc_id, name, state, pages, chunks, size in rows:
            facts = " · ".join(
                filter(None, [state, pages and f"{pages} pages", f"{chunks} chunks", size])
            )
            lines += [doc_id, f"  {elide(name, max(8, width - len(facts) - 5))} · {facts}"]
        return "\n".join(lines)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i, name in enumerate(headers):
        if name == "filename":
            table.add_column(name, no_wrap=True, overflow="ellipsis", width=min(widths[i], room))
        else:
            right = name in ("pages", "chunks", "size")
            table.add_column(
                name, no_wrap=True, width=widths[i], justify="right" if right else "left"
            )
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # file names are text, never markup
    return table


@docs_app.command("show")
def docs_show(
    document_id: Annotated[str, typer.Argument(metavar="ID", help="The document's id.")],
    server: ServerOpt = None,
    api_key: KeyOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Show one document's status and details as JSON."""

    async def action(client: httpx.AsyncClient) -> str:
        response = await client.get(f"/api/v1/documents/{document_id}")
        if response.status_code != 200:
            raise fail(response)
        return response.text

    body = run_client(server, api_key, verbose, action)
    sys.stdout.write(json.dumps(json.loads(body), indent=2, ensure_ascii=False) + "\n")


@docs_app.command("rm")
def docs_rm(
    document_id: Annotated[str, typer.Argument(metavar="ID", help="The document's id.")],
    server: ServerOpt = None,
    api_key: KeyOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Delete a document, its chunks and its stored file."""

    async def action(client: httpx.AsyncClient) -> None:
        response = await client.delete(f"/api/v1/documents/{document_id}")
        if response.status_code != 204:
            raise fail(response)

    run_client(server, api_key, verbose, action)
    notice(f"deleted {document_id}")
