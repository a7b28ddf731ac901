"""The data dir's I/O failures (the engine's and our own file writes) as one StorageUnavailable."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.errors import RagError, StorageUnavailable

PERMISSION = "permission denied (the data dir must be writable by this user: RAG_DATA_DIR)"
NO_SPACE = "no space left on device (free some space under RAG_DATA_DIR, then run again)"
_REASONS = {
    errno.EACCES: PERMISSION,
    errno.EPERM: PERMISSION,
    errno.EROFS: "read-only file system (RAG_DATA_DIR must be on a writable one)",
    errno.ENOSPC: NO_SPACE,
    errno.EDQUOT: "disk quota exceeded (free some space under RAG_DATA_DIR, then run again)",
    errno.EFBIG: "file too large for the file system or the file-size limit (ulimit -f)",
}


def reason_of(exc: BaseException) -> str | None:
    """Why the data dir failed, if `exc` is a storage fault: an OSError's errno, or the
    engine's bare Exception that names the OS error ("(os error 13)", "Os { code: 27, ")."""
    if isinstance(exc, OSError) and exc.errno in _REASONS:
        return _REASONS[exc.errno]
    text = str(exc)
    for code, reason in _REASONS.items():
        if f"(os error {code})" in text or f"Os {{ code: {code}," in text:
            return reason
    if "Not enough space available" in text:  # the engine's own check before optimizing
        return NO_SPACE
    return None


@contextmanager
def storage_faults(what: str, path: Path) -> Iterator[None]:
    """Turn a storage fault inside into StorageUnavailable("cannot <what> at <path>: why");
    any other error passes unchanged."""
    try:
        yield
    except RagError:
        raise
    except Exception as exc:
        reason = reason_of(exc)
        if reason is None:
            raise
        raise StorageUnavailable(what, str(path), reason) from exc


def allocated_bytes(path: Path) -> int:
    """The disk space a folder's files take (blocks in use: the engine's files are sparse)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                continue
    return total


def check_space(what: str, path: Path, need: int) -> None:
    """Refuse a write before it starts when the disk under `path` has less than `need` free."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    with storage_faults(what, path):
        free = shutil.disk_usage(probe).free
    if free < need:
        raise StorageUnavailable(
            what,
            str(path),
            f"no space left on device ({free // 2**20} MiB free, {-(-need // 2**20)} MiB "
            "needed; free some space under RAG_DATA_DIR, then run again)",
        )


def write_atomically(path: Path, text: str) -> None:
    """`path` holds all of `text` or stays as it was: a full disk leaves no half file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
