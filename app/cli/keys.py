"""`rag keys create|list|revoke`: API keys in the key database (RAG_DATABASE__URL)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.cli.console import console, fail, out, start_command
from app.schemas.keys import KeyCreated, KeyList, KeyOut
from pipelines.errors import RagError
from pipelines.keys import ApiKey, KeyStore
from pipelines.keys.records import check_role
from pipelines.settings import Settings

keys_app = typer.Typer(
    help="Create, list and revoke API keys (stored in RAG_DATABASE__URL, by default an SQLite "
    "file in the data dir; only a hash of each key is kept).",
    no_args_is_help=True,
    add_completion=False,
)

_DURATION = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@contextmanager
def _store(settings: Settings) -> Iterator[KeyStore]:
    """The key database; any RagError (a bad field, an unknown id, no database) ends the
    command with its message and status 2."""
    try:
        store = KeyStore.open(settings.database_url)
        try:
            yield store
        finally:
            store.close()
    except RagError as exc:
        raise fail(exc.message) from exc


@keys_app.command()
def create(
    name: Annotated[str, typer.Option(help="Who or what holds the key, e.g. support-bot.")],
    role: Annotated[
        str,
        typer.Option(
            help="read: search, ask, chat; write: also upload and delete documents; "
            "admin: also keys and collections (every collection)."
        ),
    ] = "read",
    collections: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated collections the key may use, or '*' for all "
            "(default: the configured default collection)."
        ),
    ] = None,
    groups: Annotated[
        str,
        typer.Option(help="Comma-separated document groups it reads beyond public documents."),
    ] = "",
    expires: Annotated[
        str | None,
        typer.Option(
            help="When it stops working: a duration (90m, 12h, 30d, 2w), a date (2027-01-31: "
            "00:00 UTC that day) or an ISO time. Default: never."
        ),
    ] = None,
    rpm: Annotated[
        int | None,
        typer.Option(
            "--rpm",
            help="Requests per minute (default: RAG_LIMITS__REQUESTS_PER_MINUTE, else none).",
        ),
    ] = None,
    tokens_per_day: Annotated[
        int | None,
        typer.Option(
            help="Generated tokens per day (default: RAG_LIMITS__TOKENS_PER_DAY, else none)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the key and token as JSON.")
    ] = False,
) -> None:
    """Create an API key and print it, this once (only its hash is stored)."""
    start_command()
    settings = Settings()
    expires_at = parse_expiry(expires, datetime.now(UTC)) if expires else None
    with _store(settings) as store:
        key, token = store.create(
            name=name,
            role=check_role(role),
            collections=_split(collections)
            if collections is not None
            else [settings.default_collection],
            groups=_split(groups),
            expires_at=expires_at,
            requests_per_minute=rpm if rpm is not None else settings.limits.requests_per_minute,
            tokens_per_day=tokens_per_day
            if tokens_per_day is not None
            else settings.limits.tokens_per_day,
        )
    if as_json:
        typer.echo(KeyCreated(key=KeyOut.of(key), token=token).model_dump_json(indent=2))
        return
    console.print(
        f"created API key [bold]{key.id}[/] ({escape(key.name)}: {key.role}, "
        f"collections {', '.join(key.collections)})"
    )
    typer.echo(token)
    console.print("[yellow]Store this key now: it cannot be shown again.[/]")


@keys_app.command("list")
def list_keys(
    show_all: Annotated[bool, typer.Option("--all", help="Also show revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List API keys: ids, names, scopes and status (never the keys themselves)."""
    start_command()
    with _store(Settings()) as store:
        keys = store.list(include_revoked=show_all)
    if as_json:
        typer.echo(KeyList(keys=[KeyOut.of(k) for k in keys]).model_dump_json(indent=2))
        return
    if not keys:
        out.print("no API keys" + ("" if show_all else " (revoked ones: --all)"))
        return
    now = datetime.now(UTC)
    table = Table(
        caption="times in UTC", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    table.add_column("id", no_wrap=True)
    # Fixed widths for the short columns: on a narrow terminal rich would shrink them away.
    table.add_column("name", min_width=8, overflow="fold")
    table.add_column("role", width=5, no_wrap=True)
    table.add_column("collections", min_width=11, overflow="fold")
    table.add_column("groups", min_width=6, overflow="fold")
    table.add_column("status", width=7, no_wrap=True)
    for column in ("expires", "last used"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(*_row(key, now))
    # Piped or redirected there is no terminal to fit: the table whole (created: --json).
    (out if out.is_terminal else Console(width=200)).print(table)


@keys_app.command()
def revoke(
    key_id: Annotated[
        str, typer.Argument(metavar="ID", help="The key's id, as `rag keys list` shows.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the revoked key as JSON.")] = False,
) -> None:
    """Revoke an API key: the next request with it is refused (401)."""
    start_command()
    with _store(Settings()) as store:
        key = store.revoke(key_id)
    if as_json:
        typer.echo(KeyOut.of(key).model_dump_json(indent=2))
        return
    assert key.revoked_at is not None
    out.print(f"revoked API key {key.id} ({escape(key.name)}) at {_when(key.revoked_at)} UTC")


def parse_expiry(text: str, now: datetime) -> datetime:
    """`--expires`: a duration from now, a date (its 00:00 UTC) or an ISO time (UTC unless
    it says otherwise)."""
    text = text.strip()
    if match := _DURATION.fullmatch(text):
        return now + timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"--expires {text!r}: use a duration (90m, 12h, 30d, 2w), a date (2027-01-31) "
            "or an ISO time"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


def _row(key: ApiKey, now: datetime) -> list[str]:
    status = key.status(now)
    style = {"active": "green", "revoked": "red", "expired": "yellow"}[status]
    return [
        key.id,
        escape(key.name),
        key.role,
        ",".join(key.collections),
        ",".join(key.groups) or "-",
        f"[{style}]{status}[/]",
        _when(key.expires_at) if key.expires_at else "never",
        _when(key.last_used_at) if key.last_used_at else "never",
    ]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
