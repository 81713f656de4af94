"""The `docqa` command line as a subprocess: against a server (given, or found on the default
port), on its own (the app in-process), and how it fails.

Every test sets `DOCQA_LOCAL_PORT`, the port client commands look for a server on, so that a
docqa running on this machine's 127.0.0.1:8000 can never answer in a test's place.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import unique_copy, upload_file, wait_terminal
from tests.stack import Stack, free_port, unique_id
from tests.stack import run_docqa as docqa
from tests.terminal import run_on_pty

_LOG_LINE = re.compile(r'^\s*\{"ts"|\b(DEBUG|INFO|WARNING|ERROR)\b')


def _client_env(stack: Stack, **extra: str) -> dict[str, str]:
    """The session stack's environment with nothing listening on the default port."""
    return stack.env | {"DOCQA_LOCAL_PORT": str(free_port())} | extra


def _without_database(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    return env | {"DOCQA_LOCAL_PORT": str(free_port()), "HF_HUB_OFFLINE": "1"} | extra


def test_ingest_wait_then_docs_show_list_rm(stack: Stack, sample_pdf: Path, tmp_path: Path) -> None:
    pdf = unique_copy(sample_pdf, tmp_path)
    env = _client_env(stack) if stack.local else None
    ingest = docqa("ingest", str(pdf), "--wait", "--server", stack.base_url, env=env)
    assert ingest.returncode == 0, ingest.stderr
    doc_id = ingest.stdout.split("→")[1].split()[0]
    assert pdf.name in ingest.stderr, "the progress bar is labelled with the file name"

    show = docqa("docs", "show", doc_id, "--server", stack.base_url, env=env)
    assert show.returncode == 0, show.stderr
    doc = json.loads(show.stdout)
    assert doc["status"] == "ready"
    assert doc["page_count"] == 4

    listing = docqa("docs", "list", "--server", stack.base_url, env=env)
    assert listing.returncode == 0
    assert doc_id in [line.split("\t")[0] for line in listing.stdout.splitlines()]

    rm = docqa("docs", "rm", doc_id, "--server", stack.base_url, env=env)
    assert rm.returncode == 0, rm.stderr
    again = docqa("docs", "show", doc_id, "--server", stack.base_url, env=env)
    assert again.returncode == 1
    assert "no document" in again.stderr


def test_ingest_reports_bad_files_and_exits_nonzero(stack: Stack, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pdf"
    bogus.write_bytes(b"not a pdf at all")
    result = docqa("ingest", str(bogus), "--server", stack.base_url)
    assert result.returncode == 1
    assert "bytes are not" in result.stderr


@pytest.mark.parametrize("how", ["--server", "DOCQA_SERVER"])
def test_an_unreachable_server_is_one_line_and_exit_1(how: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = _without_database()
    args = ["ask", "anything"]
    if how == "--server":
        args += ["--server", url]
    else:
        env["DOCQA_SERVER"] = url
    result = docqa(*args, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"docqa: Cannot reach the docqa server at {url}: all connection attempts failed."
    ]


def test_an_unusable_server_url_is_one_line_and_exit_1() -> None:
    result = docqa("docs", "list", "--server", "ftp://example.invalid", env=_without_database())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "docqa: ftp://example.invalid is not an http:// or https:// URL."
    ]


def test_an_in_process_start_that_fails_ends_in_one_line_and_exit_1(tmp_path: Path) -> None:
    # No server anywhere, and a database that refuses connections: the app cannot start. The
    # reason is logged (stderr), then one line says what happened; no traceback of the CLI's.
    env = _without_database(
        DOCQA_DATABASE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        DOCQA_DATA_DIR=str(tmp_path / "data"),
    )
    result = docqa("docs", "list", env=env, timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "docqa: Could not start docqa in this process; the reason is logged above."
    )


async def test_a_server_on_the_default_port_is_found(
    stack: Stack, client: httpx.AsyncClient, fresh_pdf: Path, tmp_path: Path
) -> None:
    # No --server, no database configured: the CLI must find the stack's API on the port that
    # DOCQA_LOCAL_PORT names (8000 unless set), not start a new, empty docqa of its own.
    if not stack.local:
        pytest.skip("needs the test's own API on a loopback port")
    uploaded = (await upload_file(client, fresh_pdf, document_id=unique_id("port"))).json()
    api = httpx.URL(stack.base_url)
    data_dir = tmp_path / "never-created"
    env = _without_database(DOCQA_LOCAL_PORT=str(api.port), DOCQA_DATA_DIR=str(data_dir))
    if api.username:  # the session stack runs in keys mode: its key is the URL's user name
        env["DOCQA_API_KEY"] = api.username
    result = docqa("docs", "list", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert uploaded["document_id"] in result.stdout.split()
    assert "in this process" not in result.stderr
    assert not data_dir.exists()


async def test_ask_in_process_writes_only_the_answer_to_stdout(
    stack: Stack, client: httpx.AsyncClient, fresh_pdf: Path
) -> None:
    # In-process (no server on the default port) and verbose, with human-readable logs: the
    # logs go to stderr, and stdout holds the answer and its sources alone.
    if not stack.local:
        pytest.skip("needs the test's own database")
    doc_id = unique_id("clean")
    assert (await upload_file(client, fresh_pdf, document_id=doc_id)).status_code == 200
    assert (await wait_terminal(client, doc_id))["status"] == "ready"
    env = _client_env(stack, DOCQA_LOG_JSON="false")
    result = docqa("ask", "What does a blind text tell you?", "--doc", doc_id, "-v", env=env)
    assert result.returncode == 0, result.stderr
    answer, _, sources = result.stdout.partition("\n\nSources:\n")
    assert answer.strip(), result.stdout
    assert not [line for line in result.stdout.splitlines() if _LOG_LINE.search(line)]
    source_line = re.compile(rf"^\[\d+\] .+, page \d+ \({re.escape(doc_id)}\)$")
    assert all(source_line.match(line) for line in sources.splitlines()), sources
    assert "running docqa in this process" in result.stderr
    assert re.search(r"\bINFO\b", result.stderr), "-v shows info logs, on stderr"
    assert '{"ts"' not in result.stderr


async def test_ids_are_printed_whole_on_a_narrow_terminal(
    stack: Stack, client: httpx.AsyncClient, fresh_pdf: Path
) -> None:
    # The longest id a client may choose, on a 60-column terminal: the table gives way (file
    # names elided, or two lines a document), never the id, which is pasted into other commands.
    doc_id = unique_id("whole-" + "x" * 45)[:64]
    assert (await upload_file(client, fresh_pdf, document_id=doc_id)).status_code == 200
    env = (_client_env(stack) if stack.local else dict(os.environ)) | {"NO_COLOR": "1"}
    args = ["docs", "list", "--server", stack.base_url]
    code, screen = run_on_pty([sys.executable, "-m", "docqa", *args], env, columns=60)
    assert code == 0, screen
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in screen.splitlines()]
    assert doc_id in lines, screen


def test_ingest_without_a_server_runs_its_own_worker(
    stack: Stack, database_url: str, tmp_path: Path, shared_data: Path
) -> None:
    # No --server and none on the default port: the CLI serves the app in-process on the same
    # database and, with --wait, works the queue itself (the shared worker may take the job
    # first; either way it ends).
    doc = unique_copy(shared_data / "office" / "docling" / "word_sample.docx", tmp_path)
    env = _client_env(stack, DOCQA_DATA_DIR=str(stack.data_dir))
    result = docqa("ingest", str(doc), "--wait", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "→" in result.stdout
    assert "ready" in result.stderr
    assert "running docqa in this process" in result.stderr


def test_data_lives_in_the_per_user_directory_not_the_current_one(tmp_path: Path) -> None:
    # No DOCQA_DATA_DIR and no server: the embedded database goes to the per-user data
    # directory (XDG_DATA_HOME/docqa here), never into the directory the command runs in.
    work, xdg = tmp_path / "work", tmp_path / "xdg"
    work.mkdir()
    env = _without_database(XDG_DATA_HOME=str(xdg))
    result = _run_in(work, ["docs", "list"], env)
    assert result.returncode == 0, result.stderr
    assert f"data in {xdg / 'docqa'}" in result.stderr
    assert (xdg / "docqa" / "pg").is_dir()
    assert list(work.iterdir()) == []


def test_an_existing_dot_docqa_keeps_working_with_a_notice(tmp_path: Path) -> None:
    work, xdg = tmp_path / "work", tmp_path / "xdg"
    (work / ".docqa").mkdir(parents=True)
    result = _run_in(work, ["docs", "list"], _without_database(XDG_DATA_HOME=str(xdg)))
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "./.docqa" in line]
    assert len(notices) == 1, result.stderr
    assert (work / ".docqa" / "pg").is_dir()
    assert not xdg.exists()


def _run_in(cwd: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docqa", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_serve_starts_and_stops_an_embedded_database(stack: Stack, tmp_path: Path) -> None:
    import psutil

    from tests.stack import Proc, wait_http

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env |= {"DOCQA_DATA_DIR": str(tmp_path / "d"), "DOCQA_WORKER": "false"}
    port = free_port()
    proc = Proc(["serve", "--port", str(port)], env, tmp_path / "serve.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, timeout=60)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/documents").json()["documents"] == []

        def embedded_postgres() -> list[psutil.Process]:
            found = []
            for p in psutil.process_iter(["cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if "postgres" in cmd and str(tmp_path / "d") in cmd:
                    found.append(p)
            return found

        assert embedded_postgres(), "serve started its own PostgreSQL under DOCQA_DATA_DIR"
    finally:
        proc.stop()
    assert proc.popen is not None
    # uvicorn finishes its graceful shutdown, then re-raises the SIGTERM it caught.
    assert proc.popen.returncode in (0, -15)
    assert "Application shutdown complete" in proc.log_path.read_text()
    assert not embedded_postgres(), "and stopped it on exit"


def test_serve_on_a_port_in_use_says_so_and_exits_1(tmp_path: Path) -> None:
    """Checked before anything starts: uvicorn would find out only after the app (and its
    database) had started, and the process then stayed up with nothing to serve."""
    import socket

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env |= {"DOCQA_DATA_DIR": str(tmp_path / "d")}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = docqa("serve", "--port", str(port), env=env, timeout=60)
    assert done.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "--port" in done.stderr
    assert not (tmp_path / "d" / "pg").exists(), "no database was started"
