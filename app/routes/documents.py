"""Documents in a collection: upload (multipart), list, delete, and a document's original file.

An upload runs the same ingest job as `rag ingest`, inside the service: a document's identity
is its file name within the collection, so uploading a file again with the same name skips it
when unchanged and replaces its chunks when changed.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Annotated

import anyio
from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.responses import FileResponse

from app.deps import ServicesDep
from app.errors import error_responses
from app.principal import CallerDep
from app.schemas import (
    DeletedDocument,
    DocumentList,
    DocumentOut,
    FailedFile,
    UploadedFile,
    UploadResult,
)
from app.services import Services
from ingest.loaders import SUPPORTED
from pipelines.access import FULL_ACCESS, Access, parse_groups
from pipelines.errors import (
    DocumentNotFound,
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from pipelines.identity import document_id
from pipelines.stores.schema import check_collection_name
from pipelines.types import Filters

log = logging.getLogger(__name__)
router = APIRouter(tags=["documents"])

MAX_FILES = 32
_COLLECTION_ERRORS = error_responses(
    403, 404, 422, e404="The collection (or document) does not exist"
)
_MB = 1024 * 1024
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
# Served as text, never rendered: an uploaded page or image with script in it must not run
# with this origin's rights (the page's key is in its localStorage).
_ACTIVE_TYPES = {
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
}


def upload_name(filename: str | None) -> str:
    """The client's file name without any folder part; refused when it cannot be a source."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name.startswith(".") or _UNSAFE.search(name) or len(name) > 255:
        raise InvalidInput(
            f"invalid file name {filename!r}: give each file a plain name such as 'report.pdf'"
        )
    return name


def _check_uploads(files: list[UploadFile], max_mb: int) -> list[str]:
    """Names for the uploads, or the first reason to refuse the whole request (nothing lands)."""
    if len(files) > MAX_FILES:
        raise InvalidInput(f"too many files: {len(files)} (at most {MAX_FILES} per request)")
    names = [upload_name(f.filename) for f in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(f"the same file name appears twice in one upload: {', '.join(dupes)}")
    for name in names:
        suffix = Path(name).suffix.lower()
        if suffix not in SUPPORTED:
            raise UnsupportedMediaType(
                f"unsupported file type '{suffix or name}' for '{name}' "
                f"(supported: {', '.join(SUPPORTED)})"
            )
    for name, f in zip(names, files, strict=True):
        if f.size is not None and f.size > max_mb * _MB:
            raise PayloadTooLarge(
                f"'{name}' is {f.size / _MB:.1f} MB; the limit is {max_mb} MB per file "
                "(RAG_SERVER__MAX_UPLOAD_MB)"
            )
    return names


async def _check_groups(
    services: Services, collection: str, access: Access, groups: list[str], names: list[str]
) -> None:
    """A key limited to some groups writes only documents it could read afterwards: with no
    groups or its own, never over a same-named document of another group (403)."""
    if access.groups is None:
        return
    foreign = sorted(set(groups) - access.groups)
    if foreign:
        raise Forbidden(
            f"this API key may not give documents the groups {', '.join(foreign)}: "
            "it belongs to " + (", ".join(sorted(access.groups)) or "no group")
        )
    if collection not in await services.store.list_collections():
        return
    for name in names:
        stored = await services.store.count(collection, {"source": name}, access=FULL_ACCESS)
        if stored and not await services.store.count(collection, {"source": name}, access=access):
            raise Forbidden(f"'{name}' exists in '{collection}' and this API key may not read it")


def _save(files: list[UploadFile], names: list[str], folder: Path) -> dict[Path, str]:
    saved: dict[Path, str] = {}
    for name, f in zip(names, files, strict=True):
        path = folder / name
        with path.open("wb") as out:
            f.file.seek(0)
            shutil.copyfileobj(f.file, out, length=_MB)
        saved[path] = name
    return saved


@router.post(
    "/collections/{collection}/documents",
    response_model=UploadResult,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "Every document was already stored unchanged"},
        **error_responses(
            400,
            413,
            415,
            422,
            e422="Invalid request, or no file could be read (each named, with why)",
        ),
    },
    summary="Upload documents into a collection (created if missing)",
)
async def upload_documents(
    collection: str,
    caller: CallerDep,
    services: ServicesDep,
    response: Response,
    files: Annotated[
        list[UploadFile],
        File(description=f"One or more files ({', '.join(SUPPORTED)})"),
    ],
    groups: Annotated[
        str,
        Form(
            description="The documents' access list: groups, comma-separated (e.g. "
            "'hr,finance'); only keys sharing one of them retrieve the documents. Empty: "
            "public. A .jsonl line's own `groups` wins for that line"
        ),
    ] = "",
) -> UploadResult:
    check_collection_name(collection)
    access = caller.write(collection)
    run_groups = list(parse_groups(groups))  # 422 naming a bad group, before anything is read
    names = _check_uploads(files, services.settings.server.max_upload_mb)
    async with services.ingest_lock:
        await _check_groups(services, collection, access, run_groups, names)
        with tempfile.TemporaryDirectory(prefix="ragserve-upload-") as tmp:
            saved = await anyio.to_thread.run_sync(_save, files, names, Path(tmp))
            summary = await services.pipeline.run(
                list(saved),
                collection,
                names=saved,
                groups=run_groups,
                telemetry=services.telemetry,
            )
        failed = [FailedFile(**f) for f in summary.failed]
        landed = [n for n in names if not any(f.source == n for f in failed)]
        if not landed:
            reasons = "; ".join(f"{f.source}: {f.reason}" for f in failed)
            raise InvalidInput(f"no document could be ingested ({reasons})")
        uploaded = [
            UploadedFile(
                source=name,
                doc_id=None if name.lower().endswith(".jsonl") else document_id(collection, name),
                chunks=await services.store.count(collection, {"source": name}, access=access),
            )
            for name in landed
        ]
    log.info(
        "upload into '%s': %d added, %d updated, %d unchanged, %d failed, %d chunks in %.1fs",
        collection,
        summary.added,
        summary.updated,
        summary.unchanged,
        len(failed),
        summary.chunks,
        summary.seconds,
    )
    if summary.added == 0 and summary.updated == 0:
        response.status_code = status.HTTP_200_OK
    return UploadResult(
        collection=collection,
        files=uploaded,
        added=summary.added,
        updated=summary.updated,
        unchanged=summary.unchanged,
        chunks=summary.chunks,
        failed=failed,
        seconds=summary.seconds,
    )


@router.get(
    "/collections/{collection}/documents",
    response_model=DocumentList,
    responses=_COLLECTION_ERRORS,
    summary="List a collection's documents (by source) with their chunk counts",
)
async def list_documents(
    collection: str,
    caller: CallerDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    source: Annotated[
        str | None, Query(description="Only the document(s) with this source (file name or path)")
    ] = None,
) -> DocumentList:
    check_collection_name(collection)
    access = caller.read(collection)
    # One point per document (its first chunk carries the chunk count): the cost grows with
    # the documents, not the chunks (reading every chunk of 1M takes ~30 s on 2 cores).
    filters: Filters = {"chunk_index": 0}
    if source is not None:
        filters["source"] = source
    states = await services.store.document_states(collection, filters, access=access)
    ordered = sorted(states.values(), key=lambda s: (s.source, s.doc_id))
    return DocumentList(
        collection=collection,
        total=len(ordered),
        documents=[
            DocumentOut(doc_id=s.doc_id, source=s.source, chunks=s.expected_chunks)
            for s in ordered[offset : offset + limit]
        ],
    )


@router.delete(
    "/collections/{collection}/documents/{doc_id}",
    response_model=DeletedDocument,
    responses=_COLLECTION_ERRORS,
    summary="Delete a document and all of its chunks",
)
async def delete_document(
    collection: str, doc_id: str, caller: CallerDep, services: ServicesDep
) -> DeletedDocument:
    check_collection_name(collection)
    access = caller.write(collection)
    async with services.ingest_lock:
        # A document the key cannot read (another group's) is not there for it either.
        chunks = await services.store.count(collection, {"doc_id": doc_id}, access=access)
        if chunks == 0:
            raise DocumentNotFound(collection, doc_id)
        await services.store.delete_documents(collection, [doc_id])
        await services.store.commit(collection)
        await anyio.to_thread.run_sync(services.originals.remove, collection, [doc_id])
    log.info("deleted document %s (%d chunks) from '%s'", doc_id, chunks, collection)
    return DeletedDocument(collection=collection, doc_id=doc_id, deleted_chunks=chunks)


def _served_as(source: str) -> tuple[str, str]:
    """The content type and disposition a kept file is served with: a PDF inline (the browser's
    viewer opens it at a page); anything else as a download, markup as plain text."""
    name = PurePosixPath(source.replace("\\", "/")).name
    if name.lower().endswith(".pdf"):
        return "application/pdf", "inline"
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return ("text/plain" if guessed in _ACTIVE_TYPES else guessed), "attachment"


@router.get(
    "/collections/{collection}/documents/{doc_id}/file",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file as it was ingested: a PDF inline (`application/pdf`), "
            "any other type as an attachment (HTML as `text/plain`)",
            "content": {"application/pdf": {}, "application/octet-stream": {}},
        },
        **error_responses(
            403,
            404,
            422,
            e404="The collection or document does not exist (for this key), or its original "
            "is not kept (`original_not_kept`: ingested before originals were kept, with "
            "RAG_KEEP_ORIGINALS=false, or a line of a .jsonl corpus)",
        ),
    },
    summary="Download a document's original file (a cited PDF, to open at its page)",
)
async def document_file(
    collection: str, doc_id: str, caller: CallerDep, services: ServicesDep
) -> FileResponse:
    check_collection_name(collection)
    access = caller.read(collection)
    services.originals.path_for(collection, doc_id)  # not 32 hex digits: no document's id
    # A document the key cannot read (another group's) is not there for it either.
    # Its first chunk is enough (it carries the document's source).
    only_first: Filters = {"doc_id": doc_id, "chunk_index": 0}
    states = await services.store.document_states(collection, only_first, access=access)
    if doc_id not in states:
        raise DocumentNotFound(collection, doc_id)
    path = await anyio.to_thread.run_sync(services.originals.find, collection, doc_id)
    source = states[doc_id].source
    media_type, disposition = _served_as(source)
    return FileResponse(
        path,
        media_type=media_type,
        filename=PurePosixPath(source.replace("\\", "/")).name,
        content_disposition_type=disposition,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-cache"},
    )
