"""The JSON log format: one object per line with time (UTC), level, logger, message and the
fields passed with `extra=`; and `configure_logging`, which installs one handler, once."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.logs import JsonFormatter, configure_logging
from pipelines.settings import LogSettings


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("ragserve.audit", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_record_is_one_json_object_with_its_fields() -> None:
    line = JsonFormatter().format(
        record("request=%s status=%d", "abc", 200, request_id="abc", status=200, path=Path("/x"))
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "info" and entry["logger"] == "ragserve.audit"
    assert entry["message"] == "request=abc status=200"
    assert entry["request_id"] == "abc" and entry["status"] == 200
    assert entry["path"] == "/x"  # what JSON cannot hold is its str()
    assert entry["time"].endswith("Z")
    written = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert written.utcoffset() is not None and abs(datetime.now(UTC) - written).days == 0
    assert not {"args", "msg", "levelno", "pathname", "color_message"} & entry.keys()


def test_fixed_keys_win_over_extras_and_newlines_stay_escaped() -> None:
    entry = json.loads(
        JsonFormatter().format(record("two\nlines", level="spoofed", logger="other"))
    )
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "info",
        "ragserve.audit",
        "two\nlines",
    )


def test_an_exception_is_a_field_of_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord(
            "app", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and "ValueError: boom" in entry["exception"]


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """The root logger as it was (pytest's own handlers), after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # A command run earlier in this process (the CLI tests) left its handler: start without.
    root.handlers[:] = [h for h in handlers if not getattr(h, "_ragserve_handler", False)]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_handlers")
def test_configure_logging_installs_one_handler_in_the_format() -> None:
    stream = io.StringIO()
    others = len(logging.getLogger().handlers)
    configure_logging(LogSettings(format="text"), stream=io.StringIO())
    configure_logging(LogSettings(format="json", level="warning"), stream=stream)
    root = logging.getLogger()
    assert len(root.handlers) == others + 1  # replaced, not added
    assert root.level == logging.WARNING
    logging.getLogger("ingest.pipeline").warning("listening on %s", "127.0.0.1:8000")
    logging.getLogger("app").info("not at warning")
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "listening on 127.0.0.1:8000"
    configure_logging(LogSettings(format="text"), level="debug", stream=stream)
    logging.getLogger("app").debug("plain")
    assert stream.getvalue().splitlines()[-1].endswith("DEBUG app: plain")
