"""The ingested files kept as they were, one copy per document, for the API to serve (a cited PDF
opened at its page): `<data_dir>/originals/<collection>/<doc_id>`.

A path is made of a checked collection name and a document id of 32 hex digits only, so no
request can name a file outside the folder. A copy is written beside its place and moved in
with `os.replace`: a reader sees the old file or the new one, never half of one. A .jsonl
corpus is not kept (its lines are the documents; no line is a file of its own).
"""

from __future__ import annotations

import filecmp
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import DocumentNotFound, OriginalNotKept
from pipelines.settings import Settings
from pipelines.stores.schema import check_collection_name

log = logging.getLogger(__name__)
_DOC_ID = re.compile(r"[0-9a-f]{32}")
_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Originals:
    """The kept files under `root`. `enabled` (RAG_KEEP_ORIGINALS): keep new copies; copies
    kept before are still found and removed with their documents when it is off."""

    root: Path
    enabled: bool = True

    @classmethod
    def of(cls, settings: Settings) -> Originals:
        return cls(settings.originals_dir, settings.keep_originals)

    def path_for(self, collection: str, doc_id: str) -> Path:
        """Where the document's original lives (422 for a bad collection name; a doc_id that
        is not 32 hex digits is no document's: DocumentNotFound)."""
        check_collection_name(collection)
        if not _DOC_ID.fullmatch(doc_id):
            raise DocumentNotFound(collection, doc_id)
        return self.root / collection / doc_id

    def keep(self, collection: str, files: Mapping[str, Path]) -> int:
        """Copy each document's file (doc_id → its path) unless the same file is kept already
        (same size and mtime, as the copy leaves them, or the same bytes); the number copied.
        A copy that fails is logged and skipped: its document is stored all the same, and the
        next run of the same file copies it."""
        if not self.enabled:
            return 0
        copied = 0
        for doc_id, source in files.items():
            target = self.path_for(collection, doc_id)
            try:
                if target.exists() and filecmp.cmp(source, target, shallow=True):
                    continue
                _copy(source, target)
                copied += 1
            except OSError as exc:
                log.warning("could not keep the original of %s (%s): %s", doc_id, source, exc)
        return copied

    def remove(self, collection: str, doc_ids: Iterable[str]) -> None:
        """Delete the documents' copies (their documents are gone: a copy that cannot be
        deleted is logged, never served again, since the route asks the store first)."""
        for doc_id in doc_ids:
            try:
                self.path_for(collection, doc_id).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete the original of %s: %s", doc_id, exc)

    def remove_collection(self, collection: str) -> None:
        check_collection_name(collection)
        shutil.rmtree(self.root / collection, ignore_errors=True)

    def find(self, collection: str, doc_id: str) -> Path:
        """The kept file of a document (OriginalNotKept when there is none)."""
        path = self.path_for(collection, doc_id)
        if not path.is_file():
            raise OriginalNotKept(collection, doc_id)
        return path


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, length=_MB)
        shutil.copystat(source, part)  # its mtime: the next run's cheap "same file" check
        os.replace(part, target)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
