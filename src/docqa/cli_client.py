"""Client commands: `ingest`, `ask`, `docs list|show|rm`, `status`.

Each finds its server (see `docqa.client`), talks to it over HTTP, and prints results on stdout
and everything else (notices, progress, errors) on stderr, so that `docqa ask ... > answer.txt`
holds the answer alone. Heavy modules (httpx, rich, the app) are imported inside the commands:
`docqa --help` and a command against a running server start in well under 0.3 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    import httpx
    from rich.console import Console

    from docqa.settings import Settings

T = TypeVar("T")

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="DOCQA_SERVER",
        metavar="URL",
        help="A docqa server. Default: one on 127.0.0.1:8000, else the app in-process.",
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="DOCQA_API_KEY", metavar="KEY", help="API key, if needed."),
]
VerboseOpt = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        metavar="",
        show_default=False,
        help="In-process mode: show info logs on stderr (-vv: debug). Default: warnings only.",
    ),
]


@cache
def out() -> Console:
    from rich.console import Console

    return Console(highlight=False)


@cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def notice(text: str) -> None:
    err().print(f"docqa: {text}", markup=False, soft_wrap=True)


def _in_process_settings(verbose: int, **overrides: Any) -> Settings:
    """Settings for the in-process app, logging to stderr at WARNING unless -v (or an explicit
    DOCQA_LOG_LEVEL), and a line saying where the data lives."""
    from docqa.logs import configure_logging
    from docqa.settings import LEGACY_DATA_DIR, Settings

    settings = Settings(**overrides)
    level = {0: "WARNING", 1: "INFO"}.get(verbose, "DEBUG")
    if verbose == 0 and "log_level" in settings.model_fields_set:
        level = settings.log_level
    configure_logging(level, settings.log_json)
    where = f"data in {settings.data_dir.resolve()}"
    if settings.database_url:
        from docqa.db.engine import redacted

        where = f"database {redacted(settings.database_url)}, {where}"
    from docqa.client import default_server_url

    notice(f"no server at {default_server_url()}; running docqa in this process ({where}).")
    if "data_dir" not in settings.model_fields_set and settings.data_dir == LEGACY_DATA_DIR:
        notice(
            "using ./.docqa in the current directory, where older versions kept data; "
            "set DOCQA_DATA_DIR, or move it to the per-user directory, to use it from anywhere."
        )
    return settings


def run_client(
    server: str | None,
    api_key: str | None,
    verbose: int,
    action: Callable[[httpx.AsyncClient], Awaitable[T]],
    *,
    worker: bool = False,
) -> T:
    """Run `action` against the server found for these options, or an in-process one (with its
    own worker if `worker`). Connection failures print one line and exit 1."""
    from docqa.client import ClientError, api_client, find_default_server, local_server

    async def main(url: str | None) -> T:
        if url:
            async with api_client(url, api_key) as client:
                return await action(client)
        settings = _in_process_settings(verbose, worker=worker)
        async with local_server(settings) as local, api_client(local, None) as client:
            return await action(client)

    try:
        return asyncio.run(main(server or find_default_server()))
    except ClientError as exc:
        notice(str(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def detail_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(detail := body.get("detail"), str):
        return detail
    return f"The server answered HTTP {response.status_code}."


def fail(response: httpx.Response) -> typer.Exit:
    notice(detail_of(response))
    return typer.Exit(1)


def elide(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --- ingest -------------------------------------------------------------------------------------


def _files(paths: list[Path]) -> list[Path]:
    from docqa import formats

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += [
                child
                for child in sorted(path.rglob("*"))
                if child.is_file() and formats.by_extension(child.name)
            ]
        elif path.is_file():
            found.append(path)
        else:
            notice(f"not found: {path}")
    return found


async def _upload(client: httpx.AsyncClient, path: Path) -> dict[str, Any] | None:
    import mimetypes

    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    while True:
        with path.open("rb") as f:
            response = await client.post("/api/v1/upload", files={"file": (path.name, f, ctype)})
        if response.status_code != 429 or "retry-after" not in response.headers:
            break
        # A folder can hold more files than a key may upload per minute: wait, then go on.
        wait_s = max(1, int(response.headers["retry-after"]))
        notice(f"upload limit reached; waiting {wait_s} s")
        await asyncio.sleep(wait_s)
    if response.status_code != 200:
        notice(f"{path}: {detail_of(response)}")
        return None
    data: dict[str, Any] = response.json()
    note = " (already uploaded)" if data["duplicate"] else ""
    out().print(f"{path} → {data['document_id']}{note}", markup=False, soft_wrap=True)
    return data


async def _wait(client: httpx.AsyncClient, uploaded: list[dict[str, Any]]) -> int:
    """Progress bars on stderr, one per file, labelled with its name; returns the failures."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TaskID, TextColumn

    failed = 0
    width = min(40, max(len(d["filename"]) for d in uploaded))
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stage]}"))
    with Progress(*columns, console=err()) as progress:
        tasks: dict[str, TaskID] = {
            d["document_id"]: progress.add_task(
                escape(elide(d["filename"], width).ljust(width)), total=100, stage="queued"
            )
            for d in uploaded
        }
        pending = set(tasks)
        while pending:
            for doc_id in list(pending):
                response = await client.get(f"/api/v1/documents/{doc_id}")
                if response.status_code != 200:
                    raise fail(response)
                doc = response.json()
                stage = doc["status"] if doc["status"] != "processing" else doc["progress"]["stage"]
                if doc["status"] == "failed":
                    stage = f"[red]failed: {escape(doc['error']['message'])}[/]"
                    failed += 1
                progress.update(tasks[doc_id], completed=doc["progress"]["percent"], stage=stage)
                if doc["status"] in ("ready", "failed"):
                    pending.discard(doc_id)
            await asyncio.sleep(0.3)
    return failed


def ingest(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Files or folders.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until each file is processed, with progress.")
    ] = False,
    server: ServerOpt = None,
    api_key: KeyOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Upload files (folders are searched for supported files); prints each file's id."""
    files = _files(paths)
    if not files:
        raise typer.Exit(1)

    async def action(client: httpx.AsyncClient) -> int:
        uploaded = [d for p in files if (d := await _upload(client, p))]
        failures = len(files) - len(uploaded)
        if wait and uploaded:
            failures += await _wait(client, uploaded)
        return failures

    # In-process and asked to wait, this process also works the queue.
    failures = run_client(server, api_key, verbose, action, worker=wait)
    raise typer.Exit(1 if failures else 0)


# --- ask ----------------------------------------------------------------------------------------


def ask(
    question: Annotated[str, typer.Argument(metavar="QUESTION", help="The question to answer.")],
    doc: Annotated[
        list[str] | None,
        typer.Option("--doc", metavar="ID", help="Answer from this document (repeatable)."),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", metavar="K", min=1, max=50, help="How many sources to use."),
    ] = None,
    server: ServerOpt = None,
    api_key: KeyOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Ask a question: the answer streams in as it is written, then its sources with pages."""
    payload: dict[str, Any] = {"question": question}
    if doc:
        payload["document_ids"] = doc
    if top_k:
        payload["top_k"] = top_k

    async def action(client: httpx.AsyncClient) -> int:
        async with client.stream("POST", "/api/v1/ask", json=payload) as response:
            if response.status_code != 200:
                await response.aread()
                notice(detail_of(response))
                return 1
            return await _print_answer(response)

    raise typer.Exit(run_client(server, api_key, verbose, action))


async def _print_answer(response: httpx.Response) -> int:
    from docqa.client import sse_events

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
            notice(f"error: {json.loads(data)['detail']}")
    sys.stdout.write("\n")
    if sources:
        out().print("\nSources:", style="bold")
        for s in sources:
            out().print(
                f"[{s['n']}] {s['filename']}, page {s['page']} ({s['document_id']})",
                markup=False,
                soft_wrap=True,
            )
    return 1 if failed else 0
