"""How `docqa status` shows the report of `GET /api/v1/status` to a person."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

_OK, _BAD, _WARN = ("✓", "green"), ("✗", "red"), ("!", "yellow")


def _mark(ok: bool | None) -> tuple[str, str]:
    return _OK if ok else _BAD if ok is False else _WARN


def _line(table: Table, name: str, mark: tuple[str, str], text: str) -> None:
    table.add_row(Text(mark[0], style=mark[1]), Text(name, style="bold"), Text(text))


def render_status(report: dict[str, Any]) -> Table:
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
            _mark(llm.get("reachable")),
            f"model {llm['model']} on the configured model server: {llm.get('detail', '')}",
        )
    emb = report["embedding"]
    if emb["mode"] == "local":
        _line(table, "embeddings", _OK, f"bundled {emb['model']}, in this process")
    else:
        _line(
            table,
            "embeddings",
            _mark(emb.get("reachable")),
            f"model {emb['model']} on the configured embedding server: {emb.get('detail', '')}",
        )
    return table
