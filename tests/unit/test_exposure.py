"""Secure by default: open only on loopback, unless a key exists or RAG_SERVER__AUTH says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.principal import exposure_problem, is_loopback
from pipelines.settings import ServerSettings, Settings


def settings(**server: object) -> Settings:
    return Settings(_env_file=None, server=ServerSettings(**server))  # type: ignore[call-arg, arg-type]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_may_run_open(host: str) -> None:
    assert is_loopback(host)
    assert exposure_problem(settings(), host, has_keys=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "rag.example.com"])
def test_any_other_address_wants_a_key(host: str) -> None:
    problem = exposure_problem(settings(), host, has_keys=False)
    assert problem is not None
    assert "rag keys create" in problem and "RAG_SERVER__AUTH=off" in problem
    assert exposure_problem(settings(), host, has_keys=True) is None
    assert exposure_problem(settings(api_key=SecretStr("k")), host, has_keys=False) is None
    assert exposure_problem(settings(auth="off"), host, has_keys=False) is None


def test_auth_on_wants_a_key_even_on_loopback() -> None:
    assert exposure_problem(settings(auth="on"), "127.0.0.1", has_keys=False) is not None
    assert exposure_problem(settings(auth="on"), "127.0.0.1", has_keys=True) is None


def test_rag_serve_refuses_to_start_open_on_all_interfaces(tmp_path: Path) -> None:
    env = {**os.environ, "RAG_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env.pop("RAG_SERVER__API_KEY", None)
    env.pop("RAG_SERVER__AUTH", None)
    rag = Path(sys.executable).with_name("rag")
    done = subprocess.run(
        [str(rag), "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "refusing to serve on 0.0.0.0" in out and "rag keys create" in out
    assert "Traceback" not in out
