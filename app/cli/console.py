"""What every `rag` command shares: the two consoles, logging, errors and progress bars."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from app.logs import LogLevel, configure_logging
from pipelines.errors import RagError
from pipelines.settings import LogSettings, Settings
from pipelines.types import SEARCH_MODES, SearchMode

T = TypeVar("T")

# Messages, progress and errors go to stderr; stdout carries only the result scripts read.
console = Console(stderr=True)
out = Console()


def start_command(verbose: bool = False, *, serving: bool = False) -> None:
    """Logging, and the offline model environment (the models ship in packages: never ask
    the Hugging Face Hub).

    Logs are in RAG_LOG__FORMAT. `rag serve` logs at RAG_LOG__LEVEL; other commands write
    their results and progress on the consoles, so they log warnings only unless
    RAG_LOG__LEVEL is set (or `--verbose`: debug)."""
    log = _log_settings()
    level: LogLevel = log.level if serving or "level" in log.model_fields_set else "warning"
    configure_logging(log, level="debug" if verbose else level)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _log_settings() -> LogSettings:
    """RAG_LOG__* alone: a settings error elsewhere is the command's own to report (it reads
    the settings next, and says what is wrong in one line)."""
    try:
        return Settings().log
    except ValidationError:
        return LogSettings()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error; the caller raises what this returns (exit status 2: nothing was done)."""
    console.print(f"[bold red]error[/]: {message}", soft_wrap=True)  # one line, whatever the width
    return typer.Exit(code)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's async body; a RagError ends the command with its message, status 2."""
    try:
        return asyncio.run(main)
    except RagError as exc:
        raise fail(exc.message) from exc


def check_mode(mode: str | None) -> SearchMode | None:
    """A `--mode` value as a search mode; empty means the configured one."""
    if not mode:
        return None
    if not _is_mode(mode):
        *first, last = SEARCH_MODES
        raise fail(f"--mode must be {', '.join(first)} or {last}")
    return mode


def _is_mode(mode: str) -> TypeGuard[SearchMode]:
    return mode in SEARCH_MODES


class RateColumn(ProgressColumn):
    """Items per second, rounded for humans ("39.7/s"), blank until there is a rate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("", style="cyan")
        return Text(f"{speed:,.1f}/s" if speed < 100 else f"{speed:,.0f}/s", style="cyan")


def progress_bar(quiet: bool, *, width: int, eta: bool = False) -> Progress:
    """Bars on stderr. `quiet` (JSON output): they vanish when done, and are off entirely
    unless stderr is a terminal."""
    columns: list[ProgressColumn] = [
        TextColumn(f"{{task.description:<{width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
    ]
    if eta:
        columns.append(TimeRemainingColumn())
    return Progress(
        *columns, console=console, transient=quiet, disable=quiet and not console.is_terminal
    )


class IngestBar:
    """The ingest job's progress on rich bars: files (with the current name) and chunks, or
    with `files=False` only the chunks embedded and stored."""

    def __init__(self, progress: Progress, *, files: bool = True) -> None:
        self._p = progress
        self._files = progress.add_task("files", total=None) if files else None
        self._chunks = progress.add_task("chunks" if files else "ingest (chunks)", total=None)

    def files_total(self, n: int) -> None:
        if self._files is not None:
            self._p.update(self._files, total=n)

    def file_done(self, source: str) -> None:
        if self._files is not None:
            self._p.update(self._files, advance=1, description=f"files  {Path(source).name[:30]}")

    def chunks_done(self, n: int) -> None:
        self._p.update(self._chunks, advance=n)


def advancer(bar: Progress, task: TaskID) -> Callable[[int], None]:
    """A callback that moves one bar on by n."""

    def advance(n: int) -> None:
        bar.update(task, advance=n)

    return advance
