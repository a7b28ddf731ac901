"""`rag keys create|list|revoke` end to end: the real CLI over the SQLite key database in a
temporary data dir."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from app.cli import app
from app.cli.keys import keys_app
from pipelines.errors import Unauthorized
from pipelines.keys import KeyStore

ROOT = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"rag_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def rag(data_dir: Path) -> Any:
    """`rag …` in-process with the data dir in the environment (and no other key database)."""
    runner = CliRunner()
    env = {
        "RAG_DATA_DIR": str(data_dir),
        "RAG_DATABASE__URL": None,
        "RAG_DEFAULT_COLLECTION": None,
        "RAG_LIMITS__REQUESTS_PER_MINUTE": None,
        "RAG_LIMITS__TOKENS_PER_DAY": None,
    }

    def invoke(*args: str, **extra_env: str) -> Result:
        return runner.invoke(app, list(args), env={**env, **extra_env}, catch_exceptions=False)

    return invoke


def open_store(data_dir: Path) -> KeyStore:
    return KeyStore.open(f"sqlite:///{data_dir / 'ragserve.db'}")


def test_create_prints_the_token_once_and_list_never_shows_it(rag: Any, data_dir: Path) -> None:
    made = rag("keys", "create", "--name", "support-bot", "--collections", "alpha,beta")
    assert made.exit_code == 0, made.output
    tokens = TOKEN.findall(made.output)
    assert len(tokens) == 1
    assert made.stdout.strip() == tokens[0]  # stdout carries only the token (for scripts)
    assert "cannot be shown again" in made.stderr
    token = tokens[0]
    secret = token.split("_", 2)[2]

    store = open_store(data_dir)
    try:
        key = store.authenticate(token)
    finally:
        store.close()
    assert (key.name, key.role, key.collections) == ("support-bot", "read", ("alpha", "beta"))

    for args in (("keys", "list"), ("keys", "list", "--all"), ("keys", "list", "--json")):
        listed = rag(*args, COLUMNS="200")
        assert listed.exit_code == 0, listed.output
        assert key.id in listed.output
        assert secret not in listed.output
        assert token not in listed.output


def test_list_json_parses_and_revoke_hides_the_key(rag: Any, data_dir: Path) -> None:
    made = json.loads(rag("keys", "create", "--name", "leaver", "--role", "write", "--json").stdout)
    kept = json.loads(rag("keys", "create", "--name", "kept", "--json").stdout)
    key_id = made["key"]["id"]
    assert made["key"]["prefix"] == f"rag_{key_id}"
    assert made["key"]["collections"] == ["default"]  # the configured default collection
    assert TOKEN.fullmatch(made["token"])

    revoked = rag("keys", "revoke", key_id)
    assert revoked.exit_code == 0, revoked.output
    assert key_id in revoked.stdout
    store = open_store(data_dir)
    try:
        with pytest.raises(Unauthorized, match="revoked"):
            store.authenticate(made["token"])
    finally:
        store.close()

    listed = json.loads(rag("keys", "list", "--json").stdout)
    assert [k["id"] for k in listed["keys"]] == [kept["key"]["id"]]
    every = json.loads(rag("keys", "list", "--all", "--json").stdout)
    statuses = {k["name"]: k["status"] for k in every["keys"]}
    assert statuses == {"leaver": "revoked", "kept": "active"}
    assert all("token" not in k for k in every["keys"])
    again = json.loads(rag("keys", "revoke", key_id, "--json").stdout)
    assert again["revoked_at"] == next(k for k in every["keys"] if k["id"] == key_id)["revoked_at"]


def test_create_takes_scopes_expiry_and_limits(rag: Any) -> None:
    before = datetime.now(UTC)
    made = rag(
        "keys", "create", "--name", "hr", "--collections", "hr, payroll", "--groups", "hr,finance",
        "--expires", "30d", "--rpm", "30", "--tokens-per-day", "5000", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    key = json.loads(made.stdout)["key"]
    assert key["collections"] == ["hr", "payroll"]
    assert key["groups"] == ["hr", "finance"]
    assert (key["requests_per_minute"], key["tokens_per_day"]) == (30, 5000)
    expires = datetime.fromisoformat(key["expires_at"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)

    dated = json.loads(
        rag("keys", "create", "--name", "d", "--expires", "2099-01-31", "--json").stdout
    )
    assert datetime.fromisoformat(dated["key"]["expires_at"]) == datetime(2099, 1, 31, tzinfo=UTC)


def test_create_defaults_come_from_the_settings(rag: Any) -> None:
    made = rag(
        "keys", "create", "--name", "x", "--json",
        RAG_DEFAULT_COLLECTION="manuals",
        RAG_LIMITS__REQUESTS_PER_MINUTE="7",
        RAG_LIMITS__TOKENS_PER_DAY="900",
    )  # fmt: skip
    key = json.loads(made.stdout)["key"]
    assert key["collections"] == ["manuals"]
    assert (key["requests_per_minute"], key["tokens_per_day"]) == (7, 900)


def test_admin_key_gets_every_collection(rag: Any) -> None:
    made = rag(
        "keys", "create", "--name", "root", "--role", "admin", "--collections", "a", "--json"
    )
    assert json.loads(made.stdout)["key"]["collections"] == ["*"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("keys", "create", "--name", "x", "--role", "superuser"), "role must be one of"),
        (("keys", "create", "--name", "x", "--collections", "a b"), "invalid collection"),
        (("keys", "create", "--name", "x", "--groups", "-x"), "groups"),
        (("keys", "create", "--name", "x", "--expires", "soon"), "--expires"),
        (("keys", "create", "--name", "x", "--expires", "2001-01-01"), "in the future"),
        (("keys", "create", "--name", "x", "--rpm", "0"), "requests_per_minute"),
        (("keys", "revoke", "0123456789ab"), "no API key with id"),
        (("keys", "revoke", "not-an-id"), "no such API key"),
    ],
    ids=lambda v: "-".join(v[1:])[:40] if isinstance(v, tuple) else None,
)
def test_bad_input_is_one_line_and_exit_status_2(
    rag: Any, args: tuple[str, ...], says: str
) -> None:
    failed = rag(*args, COLUMNS="200")
    assert failed.exit_code == 2
    assert failed.stdout == ""
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("error: ")
    assert says in lines[0]
    assert "Traceback" not in failed.output


def test_every_keys_option_has_help() -> None:
    group = typer.main.get_command(keys_app)
    commands = getattr(group, "commands", {})
    assert set(commands) == {"create", "list", "revoke"}
    for name, command in commands.items():
        assert command.help, name
        for param in command.params:
            assert getattr(param, "help", None), f"rag keys {name} {param.name}"


def test_installed_command_lists_keys_as_json(data_dir: Path) -> None:
    """The real process (`python -m app.cli`), not the in-process runner."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "list", "--json"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "RAG_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"keys": []}
    assert (data_dir / "ragserve.db").exists()
