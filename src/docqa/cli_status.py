"""`docqa status`: the report of `GET /api/v1/status`, for a person or as JSON."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from docqa.cli_client import KeyOpt, ServerOpt, VerboseOpt, fail, out, run_client

if TYPE_CHECKING:
    import httpx
    from rich.table import Table

_OK, _BAD, _WARN = ("✓", "green"), ("✗", "red"), ("!", "yellow")


def _mark(ok: bool | None) -> tuple[str, str]:
    return _OK if ok else _BAD if ok is False else _WARN


def _line(table: Table, name: str, mark: tuple[str, str], text: str) -> None:
    from rich.text import Text

    table.add_row(Text(mark[0], style=mark[1]), Text(name, style="bold"), Text(text))


def render_status(report: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    server = report.get("server")
    where = server or "none running; started in this process"
    _line(table, "server", _OK, f"{where} · docqa {report['version']} · auth {report['auth']}")

    db = report["database"]
    if not db["reachable"]:
        _line(table, "database", _BAD, db.get("detail") or "not reachable")
    else:
        kind = "embedded PostgreSQL" if db["embedded"] else "PostgreSQL"
        schema = "current" if db["schema_current"] else "behind: run `docqa migrate`"
        _line(
            table,
            "database",
            _mark(db["schema_current"]),
            f"{kind}, schema {db['schema']} ({schema})",
        )
        workers = report["workers"]
        alive = workers["alive"]
        _line(
            table,
            "workers",
            _mark(alive > 0 or None),
            f"{alive} alive (a heartbeat in the last {workers['window_s']:g} s)"
            + ("" if alive else "; uploads wait until one runs (`docqa worker` or `docqa serve`)"),
        )
        queue = report["queue"]
        _line(table, "queue", _OK, f"{queue['waiting']} waiting, {queue['running']} running")
        docs = report["documents"]
        counts = ", ".join(f"{n} {status}" for status, n in docs.items())
        _line(table, "documents", _mark(docs.get("failed", 0) == 0 or None), counts)

    llm = report["llm"]
    if llm["mode"] == "extractive":
        _line(
            table,
            "answers",
            _OK,
            "extractive: sentences copied from your documents (DOCQA_LLM_BASE_URL is not set)",
        )
    else:
        _line(
            table,
            "answers",
            _mark(llm.get("ok")),
            f"model {llm['model']} on the configured model server: {llm.get('detail', '')}",
        )
    emb = report["embedding"]
    if emb["mode"] == "local":
        _line(table, "embeddings", _OK, f"bundled {emb['model']}, in this process")
    else:
        _line(
            table,
            "embeddings",
            _mark(emb.get("ok")),
            f"model {emb['model']} on the configured embedding server: {emb.get('detail', '')}",
        )
    return table


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    server: ServerOpt = None,
    api_key: KeyOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Server, database, workers, queue, your documents, model servers (exit 1: a part down)."""
    from docqa.client import display_url

    async def action(client: httpx.AsyncClient) -> dict[str, Any]:
        response = await client.get("/api/v1/status")
        if response.status_code != 200:
            raise fail(response)
        report: dict[str, Any] = response.json()
        return report

    url = server
    if not url:
        from docqa.client import find_default_server

        url = find_default_server()
    report = run_client(url, api_key, verbose, action)
    report["server"] = display_url(url) if url else None
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        out().print(render_status(report))
    raise typer.Exit(0 if _healthy(report) else 1)


def _healthy(report: dict[str, Any]) -> bool:
    db = report.get("database") or {}
    models = [report.get("llm") or {}, report.get("embedding") or {}]
    return bool(
        db.get("reachable") and db.get("schema_current") and all(m.get("ok", True) for m in models)
    )
