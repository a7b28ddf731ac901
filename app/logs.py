"""Logging for the service and the CLI: `RAG_LOG__FORMAT=text` for a terminal, `json` for a log
pipeline (one object per line: `time` ISO-8601 UTC, `level`, `logger`, `message`, then every
structured field the call passed with `extra=`), at `RAG_LOG__LEVEL`.

One handler on the root logger, on stderr; every library's logger (uvicorn's included, which
`rag serve` starts without its own handlers) propagates to it, so a process writes one format.
The per-request line is `app/auth.py`'s (its structured fields are that line's `extra`).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal

from pipelines.settings import LogSettings

LogLevel = Literal["debug", "info", "warning", "error"]
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has: anything else on a record came through `extra=`.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured copy of the message
}
_OURS: Final = "_ragserve_handler"  # marks the handler configure_logging installed


def _utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line. A field that JSON cannot hold is written as
    its `str()`; the four fixed keys are never overwritten by an `extra` of the same name."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


def formatter(log: LogSettings) -> logging.Formatter:
    return JsonFormatter() if log.format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(
    log: LogSettings, *, level: LogLevel | None = None, stream: IO[str] | None = None
) -> None:
    """The root logger's one handler in `log.format`, at `level` (default `log.level`).
    Called again (a test, a second command in one process), it replaces its own handler
    instead of adding another, and leaves handlers others installed (pytest's) alone."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log))
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel((level or log.level).upper())
