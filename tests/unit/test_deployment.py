"""The compose file users run on GPU machines must parse and wire ragserve to both servers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_compose_file_wires_ragserve_to_qdrant_and_vllm() -> None:
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"qdrant", "vllm", "ragserve"} <= services.keys()
    env = services["ragserve"]["environment"]
    assert env["RAG_QDRANT__URL"] == "http://qdrant:6333"
    assert env["RAG_LLM__BASE_URL"].startswith("http://vllm:")
    gpu = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert (REPO / services["ragserve"]["build"] / "Dockerfile").is_file()


def test_compose_environment_is_understood_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for key, value in spec["services"]["ragserve"]["environment"].items():
        # What compose gives when the variable is unset: `${NAME:-default}` -> default.
        monkeypatch.setenv(key, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.qdrant.url == "http://qdrant:6333"
    assert settings.llm.base_url == "http://vllm:8000"
    assert str(settings.data_dir) == "/data"
    assert settings.server.api_key is None  # empty: no authentication
    monkeypatch.setenv("RAG_SERVER__API_KEY", "k3y")
    keyed = Settings(_env_file=None)  # type: ignore[call-arg]
    assert keyed.server.api_key is not None
    assert keyed.server.api_key.get_secret_value() == "k3y"
    assert "k3y" not in repr(keyed)


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    probe = (
        subprocess.run([docker or "docker", "compose", "version"], capture_output=True, check=False)
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("docker compose plugin not installed (the structure is checked above)")
    r = subprocess.run(
        [
            docker or "docker",
            "compose",
            "-f",
            str(REPO / "docker-compose.yml"),
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
