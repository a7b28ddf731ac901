"""A data dir that cannot be written (permissions, a full disk, a file-size limit): every `rag`
command ends with one line naming what could not be opened and why, status 2; nothing
half-written stays behind, and the next run works once the disk is fine again."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.snapshots import edge_snapshot
from tests.support.sockets import free_port

pytestmark = pytest.mark.slow

# Root ignores file modes through these capabilities; without them its own 0555 files bind it.
_NO_OVERRIDE = [
    "setpriv",
    "--inh-caps=-all",
    "--bounding-set=-dac_override,-dac_read_search,-fowner",
]


def _write_corpus(root: Path, n: int, version: str = "v1") -> None:
    root.mkdir(parents=True, exist_ok=True)
    topics = ["rivers", "volcanoes", "bridges", "orchids"]
    for i in range(n):
        topic = topics[i % len(topics)]
        body = " ".join(
            f"Fact {j} about {topic} {i} ({version}): studied in {j}." for j in range(8)
        )
        (root / f"doc{i:02d}.txt").write_text(f"{topic.title()} note {i}\n\n{body}\n")


def _rag(
    args: list[str],
    data_dir: Path,
    *,
    prefix: list[str] | None = None,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """One `rag` command as a subprocess; COLUMNS wide, so a message is one line unwrapped."""
    proc = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "app.cli", *args],
        env={**os.environ, "RAG_DATA_DIR": str(data_dir), "COLUMNS": "400", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=preexec_fn,
    )
    return proc


def _one_line_error(proc: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip().endswith(errors[0]), proc.stderr  # the last thing said
    for part in parts:
        assert part in errors[0], errors[0]


def _ingest_ok(docs: Path, data_dir: Path, env: dict[str, str] | None = None) -> None:
    proc = _rag(["ingest", str(docs), "--json", "--prune"], data_dir, env=env)
    assert proc.returncode == 0, proc.stderr


def _read_only(root: Path) -> None:
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            os.chmod(path, os.stat(path).st_mode & ~0o222)
    os.chmod(root, os.stat(root).st_mode & ~0o222)


def _writable(root: Path) -> None:
    os.chmod(root, os.stat(root).st_mode | 0o200)
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            os.chmod(path, os.stat(path).st_mode | 0o200)


@pytest.fixture
def unprivileged(tmp_path: Path) -> list[str]:
    """A command prefix under which file modes bind: none for a plain user; for root, setpriv
    without the capabilities that override them. Skips when modes cannot be made to bind."""
    if os.geteuid() != 0:
        return []
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    try:
        result = subprocess.run(
            [*_NO_OVERRIDE, "touch", str(probe / "x")], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("running as root without setpriv: a read-only dir cannot be made to bind")
    if result.returncode == 0:
        pytest.skip("running as root and dropping capabilities is refused here")
    return _NO_OVERRIDE


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 MiB tmpfs: a disk the test can fill. Skips where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        pytest.skip("no mount command here")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """A file taking all but `leave` bytes of the disk's free space."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, shutil.disk_usage(disk).free - leave)
    return filler


def test_read_only_data_dir_is_one_line_error_not_a_traceback(
    tmp_path: Path, unprivileged: list[str]
) -> None:
    docs, data = tmp_path / "docs", tmp_path / "data"
    _write_corpus(docs, 2)
    _ingest_ok(docs, data)
    _read_only(data)
    try:
        shard = data / "qdrant" / "default"
        for args in (["stats"], ["search", "rivers"], ["ingest", str(docs), "--json"]):
            proc = _rag(args, data, prefix=unprivileged)
            _one_line_error(
                proc, f"cannot open collection 'default' at {shard}", "permission denied"
            )
        proc = _rag(["ingest", str(docs), "--json", "-c", "fresh"], data, prefix=unprivileged)
        _one_line_error(proc, "collection 'fresh'", "permission denied", "RAG_DATA_DIR")
        proc = _rag(["serve", "--port", str(free_port())], data, prefix=unprivileged)
        _one_line_error(proc, "collection 'default'", "permission denied")
    finally:
        _writable(data)
    assert not (data / "qdrant" / "fresh").exists()
    _ingest_ok(docs, data)  # writable again: the store is as it was


def test_full_disk_during_ingest_leaves_nothing_half_written_and_rerun_works(
    tmp_path: Path, small_disk: Path
) -> None:
    # Cold payloads: a tmpfs allocates the pages a reader touches, and "cached" reads them all.
    env = {"RAG_QDRANT__PAYLOAD_MEMORY": "cold", "RAG_QDRANT__MIN_FREE_MB": "16"}
    docs = tmp_path / "docs"
    clean, full = tmp_path / "clean", small_disk / "data"
    _write_corpus(docs, 6)
    _ingest_ok(docs, clean, env)
    _ingest_ok(docs, full, env)
    before = edge_snapshot(full / "qdrant" / "default")
    _write_corpus(docs, 7, version="v2")
    _ingest_ok(docs, clean, env)
    reference = edge_snapshot(clean / "qdrant" / "default")

    filler = _fill(small_disk, leave=8 * 2**20)
    shard = full / "qdrant" / "default"
    proc = _rag(["ingest", str(docs), "--json", "--prune"], full, env=env)
    _one_line_error(proc, f"cannot write to collection 'default' at {shard}", "no space left")
    proc = _rag(["ingest", str(docs), "--json", "-c", "fresh"], full, env=env)
    _one_line_error(proc, "cannot create collection 'fresh'", "no space left on device")
    assert sorted(p.name for p in (full / "qdrant").iterdir()) == ["default"]
    filler.unlink()

    assert edge_snapshot(shard) == before  # the refused run wrote nothing
    _ingest_ok(docs, full, env)
    assert edge_snapshot(shard) == reference


def _file_size_limit() -> None:
    # Writes past the limit then fail with EFBIG instead of SIGXFSZ killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))


def test_file_size_limit_while_creating_a_collection_leaves_no_shard_and_rerun_works(
    tmp_path: Path,
) -> None:
    docs, data = tmp_path / "docs", tmp_path / "data"
    _write_corpus(docs, 2)
    proc = _rag(["ingest", str(docs), "--json"], data, preexec_fn=_file_size_limit)
    _one_line_error(proc, "collection 'default'", "file too large")
    assert list((data / "qdrant").iterdir()) == []  # the half-made shard is gone
    _ingest_ok(docs, data)
    assert len(edge_snapshot(data / "qdrant" / "default")) == 2
