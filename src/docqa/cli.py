"""The `docqa` command line: the server-side commands here, the rest registered below.

Adding commands: write them in a module of their own (`cli_<topic>.py`) that imports only typer
and the standard library at the top and everything else inside the command functions, then
register them in the block at the end of this file with one line. Every `docqa` run imports
every registered module, and `docqa --help` or a client command against a running server must
start in well under 0.3 s: a top-level import of the app, SQLAlchemy or torch costs seconds.
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from docqa import cli_client, cli_docs, cli_mcp, cli_status
from docqa.cli_db import db_app
from docqa.cli_keys import keys_app

T = TypeVar("T")

if TYPE_CHECKING:
    from docqa.settings import Settings

app = typer.Typer(
    help="docqa: ask questions about your own documents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a failure is one logged line, not a page of locals
)


def _settings(**overrides: Any) -> Settings:
    from docqa.logs import configure_logging
    from docqa.settings import LEGACY_DATA_DIR, Settings

    settings = Settings(**overrides)
    configure_logging(settings.log_level, settings.log_json)
    if "data_dir" not in settings.model_fields_set and settings.data_dir == LEGACY_DATA_DIR:
        import logging

        logging.getLogger("docqa").warning(
            "using ./.docqa in the current directory, where older versions kept data; set "
            "DOCQA_DATA_DIR, or move it to the per-user directory, to use it from anywhere"
        )
    return settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(metavar="PORT", envvar="DOCQA_LOCAL_PORT", help="Port to listen on."),
    ] = 8000,
) -> None:
    """Run the API, the web page and an in-process worker."""
    import logging

    import uvicorn

    from docqa.app import create_app
    from docqa.auth import resolve_mode
    from docqa.process import keep_freed_memory

    keep_freed_memory()
    settings = _settings()
    try:
        # Off only on loopback; anywhere else every request needs a key (DOCQA_AUTH=keys).
        settings = settings.model_copy(update={"auth": resolve_mode(settings.auth, host)})
    except ValueError as exc:
        cli_client.err().print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if (taken := _port_taken(host, port)) is not None:
        cli_client.err().print(taken, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    logging.getLogger("docqa").info("data directory %s", settings.data_dir.resolve())
    # h11 caps the request line and headers (httptools has no limit) and answers a larger
    # head with 400 before the app sees it; bodies are bounded in the app (docs/hardening.md).
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        proxy_headers=True,
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_kb * 1024,
    )


def _port_taken(host: str, port: int) -> str | None:
    """Why `host:port` cannot be served, checked before anything starts; None when it can.

    uvicorn finds out only after the app has started (the embedded database, the worker), and
    a failed bind then left `docqa serve` running with nothing to serve instead of exiting."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"Cannot serve on {host}: {exc.strerror}."
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"Port {port} on {host} is already in use (another docqa serve?). Stop it, "
                    "or choose another port with --port."
                )
            return f"Cannot serve on {host}:{port}: {exc.strerror}."
    return None


@app.command()
def worker(
    name: Annotated[str, typer.Option(metavar="NAME", help="Worker name, for logs.")] = "worker",
) -> None:
    """Run a worker alone; start more of them to process more documents at once."""
    import asyncio

    from docqa.process import keep_freed_memory
    from docqa.worker import worker_main

    keep_freed_memory()
    asyncio.run(worker_main(_settings(), name))


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    from docqa.db import migrate as migrations
    from docqa.db.engine import resolve_url

    url, embedded = resolve_url(_settings())
    try:
        migrations.upgrade(url)
        print(f"schema at {migrations.current_revision(url)}")
    finally:
        if embedded is not None:
            embedded.stop()


async def _stoppable(work: Coroutine[Any, Any, T]) -> T:
    """Run `work`, cancelling it on SIGTERM (a timeout, a job runner) as Ctrl-C does, so that
    its clean-up runs: `docqa eval` stops its embedded PostgreSQL and removes its temporary
    directory instead of leaving a server running."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


@app.command("eval")
def eval_command(
    dataset: Annotated[
        Path,
        typer.Argument(
            metavar="DATASET_DIR",
            help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) or a page-QA "
            "folder (documents/, questions.jsonl).",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    limit_docs: Annotated[
        int | None,
        typer.Option(
            "--limit-docs", metavar="N", min=1, help="Use only the first N documents (quick runs)."
        ),
    ] = None,
    answers: Annotated[
        bool,
        typer.Option(
            "--answers",
            help="Measure the answers instead (answer hit, refusals, citation precision) "
            "through the real ask path, on a page-QA folder.",
        ),
    ] = False,
    questions: Annotated[
        Path | None,
        typer.Option(
            "--questions",
            metavar="FILE",
            help="A questions.jsonl to use instead of the folder's own (lines may say "
            '"answerable": false).',
        ),
    ] = None,
) -> None:
    """Measure retrieval (lexical, vector, hybrid) by ingesting a dataset through the pipeline,
    or with --answers the answers themselves."""
    import asyncio
    import logging
    import sys

    from rich.progress import BarColumn, Progress, TextColumn

    from docqa.evalsets import DatasetError
    from docqa.evaluate import report_json, report_table, run_eval

    settings = _settings()
    # A log line per document would bury the progress bar; failures are listed in the report.
    logging.getLogger("docqa.ingest").setLevel(max(logging.WARNING, logging.root.level))
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"))
    with Progress(*columns, console=cli_client.err(), transient=True) as progress:
        task = progress.add_task("loading", total=None, count="")

        def on_progress(stage: str, done: int, total: int) -> None:
            progress.update(
                task, description=stage, completed=done, total=total, count=f"{done}/{total}"
            )

        try:
            if answers:
                from docqa import evaluate_answers

                report = asyncio.run(
                    _stoppable(
                        evaluate_answers.run_answer_eval(
                            settings,
                            dataset,
                            questions=questions,
                            limit_docs=limit_docs,
                            progress=on_progress,
                        )
                    )
                )
            else:
                report = asyncio.run(
                    _stoppable(
                        run_eval(
                            settings,
                            dataset,
                            limit_docs=limit_docs,
                            progress=on_progress,
                            questions=questions,
                        )
                    )
                )
        except DatasetError as exc:
            cli_client.err().print(str(exc), markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except asyncio.CancelledError:
            cli_client.err().print("Stopped: the run's database and files were removed.")
            raise typer.Exit(143) from None
    if as_json:
        sys.stdout.write(report_json(report))
    elif answers:
        cli_client.out().print(evaluate_answers.report_table(report))
    else:
        cli_client.out().print(report_table(report))


# --- commands from other modules: one line each --------------------------------------------------
app.command()(cli_client.ingest)
app.command()(cli_client.ask)
app.add_typer(cli_docs.docs_app, name="docs")
app.command()(cli_status.status)
app.command("mcp")(cli_mcp.mcp)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")


def main() -> None:
    app()
