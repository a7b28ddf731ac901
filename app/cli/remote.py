"""The running service a `rag` command talks to while it holds the embedded store.

Qdrant Edge serves one process at a time: while `rag serve` runs, the CLI cannot open the
collections it holds. `rag serve` records where it serves in `<data_dir>/serve.json` (url,
pid, started_at; written once its socket is bound, removed on a clean shutdown); `rag search`,
`rag stats` and `rag ingest` find it there and use its API over HTTP instead (search,
collections, uploads), as `rag ask` does. A record whose process is gone or whose URL does
not answer `/healthz` is stale and ignored. Being in the data dir, the record names the
service over these very collections, never another instance that happens to listen on the
configured port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import typer
from pydantic import BaseModel, ValidationError

from app.cli.console import IngestBar, console, fail
from pipelines.errors import RagError, StoreLocked
from pipelines.settings import Settings

if TYPE_CHECKING:
    from app.schemas import UploadResult
    from ingest.pipeline import IngestSummary

T = TypeVar("T")

SERVE_FILE = "serve.json"
PROBE_TIMEOUT_S = 2.0  # /healthz answers at once from a live service
CALL_TIMEOUT = httpx.Timeout(300, connect=3)  # an upload embeds its files before it answers
# One upload request's files together at most (a bigger file goes alone): the service holds
# a request's files on disk while it embeds them.
BATCH_BYTES = 64 * 1024 * 1024
_NO_DOCUMENT = "no document could be ingested ("


class ServeRecord(BaseModel):
    """What `rag serve` writes to `<data_dir>/serve.json`."""

    url: str
    pid: int
    started_at: datetime


def record_path(data_dir: Path) -> Path:
    return data_dir / SERVE_FILE


def service_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches a server bound to `host:port` at (a wildcard
    bind is reached on loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def record_service(data_dir: Path, url: str, pid: int | None = None) -> Path:
    """Record that the service at `url` (process `pid`, default this one) serves `data_dir`:
    written to a temporary file and renamed, so that a reader never sees half a record."""
    data_dir.mkdir(parents=True, exist_ok=True)
    record = ServeRecord(url=url, pid=pid or os.getpid(), started_at=datetime.now(UTC))
    path = record_path(data_dir)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".serve-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(record.model_dump_json() + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def forget_service(data_dir: Path) -> None:
    """Remove the record on the way out, if it is still this process's own."""
    record = read_record(data_dir)
    if record is not None and record.pid == os.getpid():
        record_path(data_dir).unlink(missing_ok=True)


def read_record(data_dir: Path) -> ServeRecord | None:
    try:
        return ServeRecord.model_validate_json(record_path(data_dir).read_bytes())
    except (OSError, ValidationError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, another user's
        return True
    return True


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def api_key(settings: Settings, given: str | None) -> str | None:
    """The key a command sends: `--api-key`, else RAG_SERVER__API_KEY (the bootstrap key)."""
    if given:
        return given
    return settings.server.api_key.get_secret_value() if settings.server.api_key else None


def running_service(settings: Settings, key: str | None = None) -> Service | None:
    """The live service the data dir's record names, if any."""
    record = read_record(settings.data_dir)
    if record is None or not _alive(record.pid) or not _answers(record.url):
        return None
    return Service(record.url, key)


def store_holder(settings: Settings, key: str | None = None) -> Service | None:
    """The running service that holds the embedded store (a Qdrant server is shared: the
    command opens it itself)."""
    return running_service(settings, key) if settings.qdrant.url is None else None


def local_or_service(
    settings: Settings,
    key: str | None,
    local: Callable[[], Coroutine[Any, Any, T]],
    remote: Callable[[Service], T],
) -> T:
    """Run a command's `local` body over the store, or `remote` through the service holding
    it: the one the record names, or one that the store's lock says started meanwhile. A
    RagError ends the command with its message, status 2 (`console.run`)."""
    service = store_holder(settings, key)
    if service is None:
        try:
            return asyncio.run(local())
        except StoreLocked as exc:
            service = store_holder(settings, key)
            if service is None:
                raise fail(exc.message) from exc
        except RagError as exc:
            raise fail(exc.message) from exc
    console.print(
        f"[dim]the store is held by the service at {service.url}: using its API[/]", soft_wrap=True
    )
    return remote(service)


class Refused(Exception):
    """The service answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Service:
    """A running ragserve and the key to send it."""

    url: str
    key: str | None = None

    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.Client]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else None
        with httpx.Client(base_url=self.url, headers=headers, timeout=CALL_TIMEOUT) as c:
            yield c

    def call(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
        """One request; its JSON body, or `Refused` with the service's message. A service
        gone mid-way ends the command (status 2)."""
        try:
            resp = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise fail(
                f"the service at {self.url} did not answer: {exc or type(exc).__name__}"
            ) from None
        if resp.status_code >= 400:
            raise Refused(resp.status_code, _message(resp))
        return resp.json()

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """`call` on a client of its own, a refusal ending the command (status 2)."""
        with self.client() as c:
            try:
                return self.call(c, method, path, **kwargs)
            except Refused as exc:
                raise self.refusal(exc) from None

    def refusal(self, exc: Refused) -> typer.Exit:
        """The command's end on a refusal (status 2): a key refused says how to give one."""
        if exc.status in (401, 403):
            hint = "" if self.key else "; give its API key with --api-key or RAG_SERVER__API_KEY"
            return fail(
                f"the service at {self.url} refused the request ({exc.status}): {exc.message}{hint}"
            )
        return fail(f"the service at {self.url} answered {exc.status}: {exc.message}")


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text.strip()[:300] or resp.reason_phrase


@dataclass
class _Batch:
    files: list[tuple[str, Path]] = field(default_factory=list)
    size: int = 0


def upload_paths(
    service: Service,
    paths: Sequence[Path],
    collection: str,
    groups: str,
    progress: IngestBar,
) -> IngestSummary:
    """`rag ingest` through the service: the files found as a local run finds them (folders
    walked, hidden files left out, other types counted as skipped) uploaded in batches of the
    most one request takes (app/routes/documents.py). A batch the service refuses as a whole
    (a type, a size, a name, or no file readable) is sent again file by file, so each file
    gets its own result. Through the service a document is named by its file name alone."""
    from app.routes.documents import MAX_FILES
    from ingest.loaders import discover_named, skipped_types
    from ingest.pipeline import IngestSummary

    started = time.perf_counter()
    found, shown, missing = discover_named(list(paths))
    summary = IngestSummary(collection, skipped=skipped_types(paths))
    summary.failed = [{"source": m.source, "reason": m.reason} for m in missing]
    batches: list[_Batch] = [_Batch()]
    seen: dict[str, str] = {}  # file name -> the display name of the file sent under it
    for path in found:
        name, display = path.name, shown[str(path)]
        if name in seen:
            summary.failed.append(
                {
                    "source": display,
                    "reason": f"the same file name as {seen[name]}: through the service a "
                    "document is named by its file name alone",
                }
            )
            continue
        seen[name] = display
        size = path.stat().st_size
        last = batches[-1]
        if last.files and (len(last.files) >= MAX_FILES or last.size + size > BATCH_BYTES):
            last = _Batch()
            batches.append(last)
        last.files.append((name, path))
        last.size += size
    summary.files = len(seen)
    progress.files_total(len(seen))

    with service.client() as c:
        for batch in (b for b in batches if b.files):
            for r in _send(
                service,
                c,
                f"/v1/collections/{collection}/documents",
                batch.files,
                groups,
                summary.failed,
            ):
                summary.added += r.added
                summary.updated += r.updated
                summary.unchanged += r.unchanged
                summary.chunks += r.chunks
                summary.failed += [f.model_dump() for f in r.failed]
                progress.chunks_done(r.chunks)
            for name, _ in batch.files:
                progress.file_done(name)
    summary.seconds = time.perf_counter() - started
    return summary


def _send(
    service: Service,
    c: httpx.Client,
    route: str,
    files: list[tuple[str, Path]],
    groups: str,
    failed: list[dict[str, str]],
) -> list[UploadResult]:
    """Upload `files` in one request; refused as a whole for what a file is (400, 413, 415,
    422), again one by one, each refusal then that file's failure. Any other refusal (a key,
    the service) ends the command."""
    from app.schemas import UploadResult

    try:
        with contextlib.ExitStack() as stack:
            parts = [("files", (n, stack.enter_context(p.open("rb")))) for n, p in files]
            body = service.call(c, "POST", route, files=parts, data={"groups": groups})
        return [UploadResult.model_validate(body)]
    except Refused as exc:
        if exc.status not in (400, 413, 415, 422):
            raise service.refusal(exc) from None
        if len(files) == 1:
            failed += _failures(files[0][0], exc.message)
            return []
    return [r for one in files for r in _send(service, c, route, [one], groups, failed)]


def _failures(name: str, message: str) -> list[dict[str, str]]:
    """A refused upload of one file as the failures it names: 'no document could be ingested
    (a.md: empty file)' → a.md, 'empty file'; any other refusal is the file's reason."""
    if message.startswith(_NO_DOCUMENT) and message.endswith(")"):
        failed = []
        for item in message[len(_NO_DOCUMENT) : -1].split("; "):
            source, sep, reason = item.partition(": ")
            failed.append(
                {"source": source, "reason": reason} if sep else {"source": name, "reason": item}
            )
        return failed
    return [{"source": name, "reason": message}]
