"""The `docqa` command line: serve, worker, migrate, ingest, docs."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from docqa.cli_keys import keys_app
from docqa.client import api_client, sse_events
from docqa.logs import configure_logging
from docqa.settings import Settings
from docqa.upload import KIND_BY_EXTENSION

app = typer.Typer(help="docqa: ask questions about your own documents.", no_args_is_help=True)
docs_app = typer.Typer(help="List, show and remove documents.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")
app.add_typer(keys_app, name="keys")
console = Console()
err = Console(stderr=True)

ServerOpt = Annotated[
    str | None,
    typer.Option("--server", envvar="DOCQA_SERVER", help="URL of a running docqa server."),
]
KeyOpt = Annotated[
    str | None, typer.Option("--api-key", envvar="DOCQA_API_KEY", help="API key for --server.")
]


def _settings(**overrides: Any) -> Settings:
    settings = Settings(**overrides)
    configure_logging(settings.log_level, settings.log_json)
    return settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the API, the web page and an in-process worker."""
    import uvicorn

    from docqa.app import create_app
    from docqa.auth import resolve_mode

    settings = _settings()
    try:
        # Off only on loopback; anywhere else every request needs a key (DOCQA_AUTH=keys).
        settings = settings.model_copy(update={"auth": resolve_mode(settings.auth, host)})
    except ValueError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, proxy_headers=True)


@app.command()
def worker(
    name: Annotated[str, typer.Option(help="Worker name, for logs.")] = "worker",
) -> None:
    """Run a worker alone; start more of them to process more documents at once."""
    from docqa.worker import worker_main

    asyncio.run(worker_main(_settings(), name))


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    from docqa.db import migrate as migrations
    from docqa.db.engine import resolve_url

    url, embedded = resolve_url(_settings())
    try:
        migrations.upgrade(url)
        console.print(f"schema at {migrations.current_revision(url)}")
    finally:
        if embedded is not None:
            embedded.stop()


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in KIND_BY_EXTENSION:
                    yield child
        elif path.is_file():
            yield path
        else:
            err.print(f"[red]not found:[/] {path}")


def _fail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return f"HTTP {response.status_code}"


async def _upload(client: httpx.AsyncClient, path: Path) -> dict[str, Any] | None:
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    while True:
        with path.open("rb") as f:
            response = await client.post("/api/v1/upload", files={"file": (path.name, f, ctype)})
        if response.status_code != 429 or "retry-after" not in response.headers:
            break
        # A folder can hold more files than a key may upload per minute: wait, then go on.
        wait_s = max(1, int(response.headers["retry-after"]))
        err.print(f"[yellow]…[/] upload limit reached; waiting {wait_s} s")
        await asyncio.sleep(wait_s)
    if response.status_code != 200:
        err.print(f"[red]✗[/] {path}: {_fail(response)}")
        return None
    data: dict[str, Any] = response.json()
    note = " (already uploaded)" if data["duplicate"] else ""
    console.print(f"[green]↑[/] {path} → {data['document_id']}{note}")
    return data


async def _wait(client: httpx.AsyncClient, ids: list[str]) -> int:
    failed = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {
            i: progress.add_task(i[:24], total=100, stage="queued") for i in ids
        }
        pending = set(ids)
        while pending:
            for doc_id in list(pending):
                doc = (await client.get(f"/api/v1/documents/{doc_id}")).json()
                stage = doc["status"] if doc["status"] != "processing" else doc["progress"]["stage"]
                if doc["status"] == "failed":
                    stage = f"[red]failed: {doc['error']['message']}[/]"
                    failed += 1
                progress.update(tasks[doc_id], completed=doc["progress"]["percent"], stage=stage)
                if doc["status"] in ("ready", "failed"):
                    pending.discard(doc_id)
            await asyncio.sleep(0.3)
    return failed


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to add.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until each file is processed.")
    ] = False,
    server: ServerOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Upload files (folders are searched for supported files)."""
    # Without a server, and asked to wait, this process also works the queue.
    settings = _settings(worker=wait) if not server else _settings()

    async def run() -> int:
        async with api_client(settings, server, api_key) as client:
            uploaded = [d for p in _files(paths) if (d := await _upload(client, p))]
            if not wait:
                return 0 if uploaded else 1
            return await _wait(client, [d["document_id"] for d in uploaded])

    sys.exit(1 if asyncio.run(run()) else 0)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    doc: Annotated[
        list[str] | None,
        typer.Option("--doc", help="Answer from this document id (repeat for several)."),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, max=50, help="How many sources to use.")
    ] = None,
    server: ServerOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Ask a question: the answer streams in as it is written, then its sources with pages."""
    payload: dict[str, Any] = {"question": question}
    if doc:
        payload["document_ids"] = doc
    if top_k:
        payload["top_k"] = top_k

    async def run() -> int:
        async with (
            api_client(_settings(worker=False), server, api_key) as client,
            client.stream("POST", "/api/v1/ask", json=payload) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                err.print(_fail(response), markup=False)
                return 1
            return await _print_answer(response)

    sys.exit(asyncio.run(run()))


async def _print_answer(response: httpx.Response) -> int:
    sources: list[dict[str, Any]] = []
    failed = False
    async for event, data in sse_events(response):
        if event == "message":
            sys.stdout.write(data)
            sys.stdout.flush()
        elif event == "sources":
            sources = json.loads(data)
        elif event == "error":
            failed = True
            sys.stdout.write("\n")
            err.print(f"error: {json.loads(data)['detail']}", markup=False)
    sys.stdout.write("\n")
    if sources:
        console.print("\nSources:", style="bold")
        for s in sources:
            console.print(
                f"[{s['n']}] {s['filename']}, page {s['page']} ({s['document_id']})",
                markup=False,
                highlight=False,
            )
    return 1 if failed else 0


@docs_app.command("list")
def docs_list(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    server: ServerOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List your documents, newest first."""

    async def run() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 200} | ({"status": status} if status else {})
        async with api_client(_settings(worker=False), server, api_key) as client:
            while True:
                page = (await client.get("/api/v1/documents", params=params)).json()
                out += page["documents"]
                if not page["next_cursor"]:
                    return out
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
        for d in asyncio.run(run())
    ]
    if not sys.stdout.isatty():  # piped: one tab-separated line per document, for scripts
        for row in rows:
            print("\t".join(row))
        return
    table = Table("id", "filename", "status", "pages", "chunks", "size")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@docs_app.command("show")
def docs_show(document_id: str, server: ServerOpt = None, api_key: KeyOpt = None) -> None:
    """Show one document's status and details as JSON."""

    async def run() -> httpx.Response:
        async with api_client(_settings(worker=False), server, api_key) as client:
            return await client.get(f"/api/v1/documents/{document_id}")

    response = asyncio.run(run())
    if response.status_code != 200:
        err.print(f"[red]{_fail(response)}[/]")
        raise typer.Exit(1)
    console.print_json(response.text)


@docs_app.command("rm")
def docs_rm(document_id: str, server: ServerOpt = None, api_key: KeyOpt = None) -> None:
    """Delete a document, its chunks and its stored file."""

    async def run() -> httpx.Response:
        async with api_client(_settings(worker=False), server, api_key) as client:
            return await client.delete(f"/api/v1/documents/{document_id}")

    response = asyncio.run(run())
    if response.status_code != 204:
        err.print(f"[red]{_fail(response)}[/]")
        raise typer.Exit(1)
    console.print(f"deleted {document_id}")


@app.command("eval")
def eval_command(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) or a page-QA "
            "folder (documents/, questions.jsonl)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    limit_docs: Annotated[
        int | None,
        typer.Option("--limit-docs", min=1, help="Use only the first N documents (quick runs)."),
    ] = None,
) -> None:
    """Measure retrieval (lexical, vector, hybrid) by ingesting a dataset through the pipeline."""
    import logging

    from docqa.evalsets import DatasetError
    from docqa.evaluate import report_json, report_table, run_eval

    settings = _settings()
    # A log line per document would bury the progress bar; failures are listed in the report.
    for name in ("docqa.ingest", "pgserver"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.root.level))
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"))
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("loading", total=None, count="")

        def on_progress(stage: str, done: int, total: int) -> None:
            progress.update(
                task, description=stage, completed=done, total=total, count=f"{done}/{total}"
            )

        try:
            report = asyncio.run(
                run_eval(settings, dataset, limit_docs=limit_docs, progress=on_progress)
            )
        except DatasetError as exc:
            err.print(str(exc), markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(report_json(report))
    else:
        console.print(report_table(report))


def main() -> None:
    app()
