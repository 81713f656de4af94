"""The CLI against a running server (--server) and on its own (in-process app, same database)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import unique_copy
from tests.stack import Stack
from tests.stack import run_docqa as docqa


def test_ingest_wait_then_docs_show_list_rm(stack: Stack, sample_pdf: Path, tmp_path: Path) -> None:
    pdf = unique_copy(sample_pdf, tmp_path)
    ingest = docqa("ingest", str(pdf), "--wait", "--server", stack.base_url)
    assert ingest.returncode == 0, ingest.stderr
    doc_id = ingest.stdout.split("→")[1].split()[0]

    show = docqa("docs", "show", doc_id, "--server", stack.base_url)
    assert show.returncode == 0, show.stderr
    doc = json.loads(show.stdout)
    assert doc["status"] == "ready"
    assert doc["page_count"] == 4

    listing = docqa("docs", "list", "--server", stack.base_url)
    assert listing.returncode == 0
    assert doc_id in [line.split("\t")[0] for line in listing.stdout.splitlines()]

    rm = docqa("docs", "rm", doc_id, "--server", stack.base_url)
    assert rm.returncode == 0, rm.stderr
    again = docqa("docs", "show", doc_id, "--server", stack.base_url)
    assert again.returncode == 1
    assert "no document" in again.stderr


def test_ingest_reports_bad_files_and_exits_nonzero(stack: Stack, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pdf"
    bogus.write_bytes(b"not a pdf at all")
    result = docqa("ingest", str(bogus), "--server", stack.base_url)
    assert result.returncode == 1
    assert "bytes are not" in result.stderr


def test_ingest_without_a_server_runs_its_own_worker(
    stack: Stack, database_url: str, tmp_path: Path, shared_data: Path
) -> None:
    # No --server: the CLI serves the app in-process on the same database and, with --wait,
    # works the queue itself (the shared worker may take the job first; either way it ends).
    doc = unique_copy(shared_data / "office" / "docling" / "word_sample.docx", tmp_path)
    env = stack.env | {"DOCQA_DATA_DIR": str(stack.data_dir)}
    result = docqa("ingest", str(doc), "--wait", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready" in result.stdout


def test_serve_starts_and_stops_an_embedded_database(stack: Stack, tmp_path: Path) -> None:
    import os

    import httpx
    import psutil

    from tests.stack import Proc, free_port, wait_http

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
