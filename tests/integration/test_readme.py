"""Every command in README.md works as written on the samples: its shell blocks (`rag …`,
`curl …`) and Python blocks run in order, against a live service on loopback over the sample
documents (the model's text does not matter here: a scripted generator answers), and each gives
a meaningful result, not just exit status 0 (hits found, a filter that matches a sample).

The Ingest section's `rag` commands run before the service starts, as `make run` ingests before
it serves (`--prune` needs the store itself); every later command runs beside the running
service, which the CLI finds through the record `rag serve` writes. Commands run in a scratch
folder holding `samples/`, `docs/` and `.venv` as the repository does, so what they write stays
there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.cli.remote import record_service
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import ThreadedLiveServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
COMMAND_TIMEOUT_S = 300
README_PORT = "8000"

# Commands that cannot run here, by the start of the command, with the reason.
SKIPPED = {
    "make run": "installs the whole stack into .venv and serves on port 8000",
    "make test": "the whole test suite (10+ minutes), not a README check",
    "docker": "no Docker on the test machines",
}
# The Ingest section's commands run before the service starts (see the module's docstring).
BEFORE_SERVICE = "## Ingest"
# Placeholders a person fills in from an earlier command's output, and where the test finds
# the value.
PLACEHOLDERS = ("<doc_id>", "<key_id>")


@dataclass(frozen=True)
class Command:
    kind: str  # "bash" or "python"
    text: str
    line: int  # in README.md
    section: str

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def readme_commands(text: str) -> Iterator[Command]:
    """Each command of the README's bash blocks (continuation lines joined, comments and the
    expected output shown as comments left out) and each python block whole, in order."""
    section = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line
        fence = re.fullmatch(r"```(\w+)\s*", line)
        if fence is None:
            i += 1
            continue
        kind, start = fence.group(1), i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        body = lines[start:end]
        if kind == "python":
            yield Command("python", "\n".join(body) + "\n", start + 1, section)
        elif kind in ("bash", "sh", "shell", "console"):
            j = 0
            while j < len(body):
                first = j
                logical = body[j]
                while logical.rstrip().endswith("\\") and j + 1 < len(body):
                    j += 1
                    logical = logical.rstrip()[:-1] + " " + body[j].strip()
                j += 1
                if logical.strip() and not logical.lstrip().startswith("#"):
                    yield Command("bash", logical.strip(), start + first + 1, section)
        i = end + 1


def needs_service(command: Command) -> bool:
    """Whether the service must be up: HTTP and SDK calls, and every command after Ingest."""
    return command.section != BEFORE_SERVICE or command.text.startswith("curl")


def skip_reason(command: Command) -> str | None:
    return next((why for start, why in SKIPPED.items() if command.text.startswith(start)), None)


@dataclass
class Run:
    command: Command
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> object:
        return json.loads(self.stdout)


class Walk:
    """The README's commands run one by one in `folder`, beside the service once it is up."""

    def __init__(self, folder: Path, url: Callable[[], str]) -> None:
        self.folder = folder
        self.url = url
        self.values: dict[str, str] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        # The session's one ONNX export of the embedder (tests/conftest.py), not one per run.
        env["RAG_EMBEDDING__CACHE_DIR"] = os.environ["RAG_EMBEDDING__CACHE_DIR"]
        env["COLUMNS"] = "200"
        self.env = env

    def resolve(self, command: Command) -> str:
        text = command.text
        if f":{README_PORT}" in text:
            host = self.url().removeprefix("http://")
            text = text.replace(f"localhost:{README_PORT}", host)
            text = text.replace(f"127.0.0.1:{README_PORT}", host)
        for placeholder in PLACEHOLDERS:
            if placeholder in text:
                assert placeholder in self.values, f"nothing earlier gave {placeholder}: {command}"
                text = text.replace(placeholder, self.values[placeholder])
        return text

    def run(self, command: Command) -> Run:
        text = self.resolve(command)
        argv = ["bash", "-c", text] if command.kind == "bash" else [sys.executable, "-c", text]
        done = subprocess.run(
            argv,
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        return Run(command, done.returncode, done.stdout, done.stderr)


def check(run: Run, walk: Walk) -> None:
    """What each command must have done, beyond exit status 0."""
    text, out = run.command.text, run.output
    assert run.code == 0, f"{run.command}\nexit {run.code}\n{out}"
    assert "Traceback" not in out, f"{run.command}\n{out}"
    if text.startswith("curl"):
        assert '"error"' not in run.stdout, f"{run.command}\n{out}"
    if " ingest " in text:
        if "--json" in text:
            summary = run.json()
            assert isinstance(summary, dict) and summary["failed"] == [], out
            assert summary["added"] + summary["unchanged"] + summary["updated"] >= 1, out
        elif "--prune" in text:
            assert re.search(r"\d+ deleted, 0 failed", out), out
        else:
            assert re.search(r"[1-9]\d* (added|updated|unchanged)", out), out
            assert " 0 failed" in out, out
    elif re.search(r"/documents\s+-F", text):
        body = run.json()
        assert isinstance(body, dict) and body["files"] and body["failed"] == [], out
        walk.values["<doc_id>"] = body["files"][0]["doc_id"]
    elif "/documents?" in text:
        body = run.json()
        assert isinstance(body, dict) and body["documents"], f"{run.command}: no documents\n{out}"
    elif "-X DELETE" in text:
        found = re.search(r"(\S+/documents)/\S+", walk.resolve(run.command))
        assert found, run.command
        listing = httpx.get(f"http://{found.group(1).removeprefix('http://')}", timeout=30)
        left = {d["doc_id"] for d in listing.json()["documents"]}
        assert walk.values["<doc_id>"] not in left, f"{run.command}: not deleted\n{out}"
    elif text.startswith(".venv/bin/rag search"):
        assert "coffee-brewing.txt" in out, f"{run.command}: not the coffee sample\n{out}"
    elif text.startswith(".venv/bin/rag stats"):
        names = {c["name"] for c in run.json()["collections"]}  # type: ignore[index]
        assert {"default", "manuals"} <= names, out
    elif "/v1/search" in text:
        hits = run.json()["hits"]  # type: ignore[index]
        assert hits, f"{run.command}: no hits\n{out}"
        filters = json.loads(re.search(r"-d '(.*)'", text).group(1)).get("filters", {})  # type: ignore[union-attr]
        if "source" in filters:
            assert {h["source"] for h in hits} == {filters["source"]}, out
    elif text.startswith(".venv/bin/rag ask"):
        assert "Venus" in run.stdout and "solar-system.html" in out, out
    elif "/v1/ask/stream" in text:
        assert "event: sources" in run.stdout and "event: done" in run.stdout, out
        assert "solar-system.html" in run.stdout, out
    elif "keys create" in text:
        created = re.search(r"created API key (\w+)", out)
        assert created, out
        walk.values["<key_id>"] = created.group(1)
    elif "keys revoke" in text:
        assert f"revoked API key {walk.values['<key_id>']}" in out, out
    elif "keys list" in text:
        assert "support-bot" in out and "hr-team" in out, out
    elif run.command.kind == "python" and "ChatOpenAI" in text:
        # LangChain's answer and the sources it kept, for a question the solar-system sample
        # answers.
        assert "Venus" in run.stdout and "solar-system.html" in run.stdout, out
    elif run.command.kind == "python" and "chat.completions" in text:
        # The SDK example prints the answer, then the sources its filter kept.
        assert "Venus" in run.stdout, out
        assert "solar-system.html" in run.stdout, (
            f"{run.command}: the filter matched nothing\n{out}"
        )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder shaped like the repository for the README's relative paths."""
    folder = tmp_path / "repo"
    folder.mkdir()
    for name in ("samples", "docs", ".venv"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def test_every_readme_command_works_as_written_on_the_samples(
    scratch: Path, embedder: SentenceTransformerEmbedder
) -> None:
    commands = list(readme_commands(README.read_text()))
    assert any(c.kind == "python" for c in commands) and len(commands) > 10, commands
    # The scripted answer cites the first source, as a model would.
    generator = ScriptedGenerator(tokens=["Venus ", "is ", "about ", "464 C ", "[1]", "."])
    settings = Settings(_env_file=None, data_dir=scratch / "data")  # type: ignore[call-arg]
    server: ThreadedLiveServer | None = None

    def url() -> str:
        assert server is not None, "the service is not up yet"
        return server.url

    walk = Walk(scratch, url)
    ran: list[str] = []
    skipped: list[str] = []
    try:
        for command in commands:
            if (why := skip_reason(command)) is not None:
                skipped.append(f"{command} ({why})")
                continue
            if server is None and needs_service(command):
                server = ThreadedLiveServer(settings, embedder, generator)
                server.start()
                record_service(settings.data_dir, server.url)  # as `rag serve` does
            check(walk.run(command), walk)
            ran.append(str(command))
    finally:
        if server is not None:
            server.stop()
    assert ran, "no README command ran"
    assert len(skipped) <= len(SKIPPED), skipped
