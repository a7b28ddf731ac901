"""The compose file users run on GPU machines must parse and wire ragserve to both servers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


# -- the monitoring profile: Prometheus and Grafana beside the service -----------------------


def _compose() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return spec


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts of the repository: container path -> file or folder here."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("./"):
            mounts[target] = REPO / source
    return mounts


def _flag(command: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} given {len(values)} times in {command}"
    return values[0]


def _container_port(service: dict[str, Any]) -> int:
    (published,) = service["ports"]
    return int(str(published).rsplit(":", 1)[1])


def test_monitoring_profile_adds_prometheus_and_grafana_and_leaves_the_rest_unchanged() -> None:
    services = _compose()["services"]
    assert {"prometheus", "grafana"} <= services.keys()
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
    # A plain `docker compose up` starts what it started before the profile existed.
    for name in ("qdrant", "vllm", "ragserve"):
        assert "profiles" not in services[name], name
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    # Neither has authentication worth the name on its own: both stay on loopback.
    for name in ("prometheus", "grafana"):
        for published in services[name]["ports"]:
            assert str(published).startswith("127.0.0.1:"), (name, published)
    volumes = _compose()["volumes"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = str(volume).split(":")[0]
            assert source.startswith("./") or source in volumes, (name, volume)


def test_monitoring_prometheus_runs_the_shipped_config_against_the_service() -> None:
    services = _compose()["services"]
    prometheus = services["prometheus"]
    config_path = _flag(prometheus["command"], "--config.file")
    mounted = _mounts(prometheus)
    assert mounted[config_path] == REPO / "deploy" / "prometheus.yml"
    config = yaml.safe_load(mounted[config_path].read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ragserve"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    host, port = target.split(":")
    # The service by its compose name, on the port `rag serve` listens on in its container.
    ragserve = services[host]
    serve = ragserve["command"]
    assert int(serve[serve.index("--port") + 1]) == int(port) == _container_port(ragserve)
    assert _flag(prometheus["command"], "--storage.tsdb.path") == "/prometheus"
    assert "prometheus-data:/prometheus" in prometheus["volumes"]


def test_monitoring_grafana_is_provisioned_and_needs_a_sign_in() -> None:
    services = _compose()["services"]
    grafana = services["grafana"]
    mounted = _mounts(grafana)
    assert mounted["/etc/grafana/provisioning"] == REPO / "deploy" / "grafana" / "provisioning"
    dashboards = [path for path, here in mounted.items() if here.suffix == ".json"]
    assert [mounted[p] for p in dashboards] == [REPO / "deploy" / "grafana" / "ragserve.json"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    # The password comes from the operator's environment (unset: Grafana's own default, which
    # it asks to change at the first sign-in).
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD(:-admin)?\}", password), password
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in dashboards
    # Grafana's data source is the profile's Prometheus, on its container port.
    datasources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    (source,) = [d for d in datasources if d["type"] == "prometheus"]
    assert source["url"] == f"http://prometheus:{_container_port(services['prometheus'])}"
