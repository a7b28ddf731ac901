"""The compose file users run on GPU machines must parse and wire ragserve to both servers."""

from __future__ import annotations

import importlib.metadata
import os
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
    build = services["ragserve"]["build"]
    context = build["context"] if isinstance(build, dict) else build
    assert (REPO / context / "Dockerfile").is_file()


def test_compose_environment_is_understood_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    secrets = {"QDRANT_API_KEY": "qdrant-s3cret", "VLLM_API_KEY": "vllm-s3cret"}
    for key, value in spec["services"]["ragserve"]["environment"].items():
        # What compose gives when the variable is unset: `${NAME:-default}` -> default; a
        # required `${NAME:?message}` gets the operator's value.
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
        value = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: secrets[m.group(1)], value)
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.qdrant.url == "http://qdrant:6333"
    assert settings.llm.base_url == "http://vllm:8000"
    assert settings.qdrant.api_key is not None and settings.llm.api_key is not None
    assert settings.qdrant.api_key.get_secret_value() == "qdrant-s3cret"
    assert settings.llm.api_key.get_secret_value() == "vllm-s3cret"
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
    env = {**os.environ, "QDRANT_API_KEY": "q", "VLLM_API_KEY": "v"}
    for profiles in ([], ["--profile", "ingest", "--profile", "monitoring"]):
        r = subprocess.run(
            [
                docker or "docker",
                "compose",
                "-f",
                str(REPO / "docker-compose.yml"),
                *profiles,
                "config",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        assert r.returncode == 0, r.stderr
    # Without the two server keys compose refuses to start anything, naming the variable.
    bare = {k: v for k, v in env.items() if k not in ("QDRANT_API_KEY", "VLLM_API_KEY")}
    r = subprocess.run(
        [docker or "docker", "compose", "-f", str(REPO / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        check=False,
        env=bare,
        cwd="/",
    )
    assert r.returncode != 0 and "_API_KEY" in r.stderr, r.stderr


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


# -- the GPU host's compose file and the image: health, order, pins, exposure, keys ----------

SERVERS = ("qdrant", "vllm", "ragserve")


def test_every_service_has_a_health_check_on_its_own_endpoint() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check is not None, name
        if check.get("disable"):
            assert name == "ingest", f"{name}: only the one-shot ingest may skip its check"
            continue
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for field in ("interval", "timeout", "retries"):
            assert field in check, (name, field)
    probe = {name: " ".join(services[name]["healthcheck"]["test"]) for name in SERVERS}
    # Qdrant's image has neither curl nor wget: bash's /dev/tcp asks its readiness endpoint.
    assert probe["qdrant"].startswith("CMD bash -c"), probe["qdrant"]
    assert "/dev/tcp/127.0.0.1/6333" in probe["qdrant"] and "/readyz" in probe["qdrant"]
    assert "curl" not in probe["qdrant"] and "wget" not in probe["qdrant"]
    # Compose would interpolate a bare `$status`; `$$` reaches the shell as `$`.
    assert "$$status" in probe["qdrant"]
    assert "http://127.0.0.1:8000/health" in probe["vllm"]
    assert "http://127.0.0.1:8000/readyz" in probe["ragserve"]
    # vLLM downloads its model on the first start: the grace period covers it.
    assert _seconds(services["vllm"]["healthcheck"]["start_period"]) >= 600


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


def test_depends_on_waits_for_healthy_services() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: short-form depends_on starts too early"
        for dependency, how in depends.items():
            assert how["condition"] == "service_healthy", (name, dependency)
            assert "disable" not in services[dependency]["healthcheck"], (name, dependency)
    assert set(services["ragserve"]["depends_on"]) == {"qdrant", "vllm"}
    assert set(services["ingest"]["depends_on"]) == {"qdrant"}


def test_images_are_pinned() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            assert "build" in service, name
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", (name, image)
    # Qdrant at qdrant-client's minor: the client warns about an older server.
    client = importlib.metadata.version("qdrant-client").split(".")[:2]
    server = services["qdrant"]["image"].split(":v", 1)[1].split(".")[:2]
    assert server == client, (server, client)
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", services["vllm"]["image"])


def test_qdrant_and_vllm_are_not_published_beyond_loopback() -> None:
    services = _compose()["services"]
    for name in ("qdrant", "vllm"):
        for published in services[name].get("ports", []):
            text = str(published)
            assert text.startswith("127.0.0.1:"), (name, published)
            assert text.count(":") == 2, (name, published)  # host address:host port:container


def test_server_keys_are_set_and_passed_to_ragserve_from_one_variable() -> None:
    services = _compose()["services"]
    qdrant_key = services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"]
    vllm_command = services["vllm"]["command"]
    vllm_key = vllm_command[vllm_command.index("--api-key") + 1]
    for key, var in ((qdrant_key, "QDRANT_API_KEY"), (vllm_key, "VLLM_API_KEY")):
        # Required: unset, compose refuses to start rather than run a server without a key.
        assert re.fullmatch(rf"\$\{{{var}:\?[^}}]+\}}", key), key
    for name in ("ragserve", "ingest"):
        env = services[name]["environment"]
        assert env["RAG_QDRANT__API_KEY"] == qdrant_key, name
        assert env["RAG_LLM__API_KEY"] == vllm_key, name
    assert re.fullmatch(r"\$\{HF_TOKEN(:-)?\}", services["vllm"]["environment"]["HF_TOKEN"])


def test_ingest_profile_runs_rag_ingest_once_on_a_documents_mount() -> None:
    services = _compose()["services"]
    ingest = services["ingest"]
    assert ingest["profiles"] == ["ingest"]
    assert ingest["command"] == ["rag", "ingest", "/documents"]
    assert ingest["restart"] == "no"
    assert ingest["image"] == services["ragserve"]["image"]
    assert ingest["build"] == services["ragserve"]["build"]
    targets = dict(_volume(str(v))[::-1] for v in ingest["volumes"])
    # The host folder is the operator's (`RAG_DOCUMENTS`, default ./documents), read-only.
    assert re.fullmatch(r"\$\{RAG_DOCUMENTS:-\./documents\}", targets["/documents"])
    assert f"{targets['/documents']}:/documents:ro" in ingest["volumes"]
    # Into the same data dir and Qdrant the service reads.
    assert (
        targets["/data"] == "ragserve-data"
        and "ragserve-data:/data" in services["ragserve"]["volumes"]
    )
    serve_env = services["ragserve"]["environment"]
    for key in ("RAG_DATA_DIR", "RAG_QDRANT__URL", "RAG_LLM__MODEL"):
        assert ingest["environment"][key] == serve_env[key], key


def _volume(spec: str) -> tuple[str, str]:
    """A short-form volume's (source, target); the source may be `${VAR:-default}`."""
    if spec.endswith((":ro", ":rw")):
        spec = spec[:-3]
    source, target = spec.rsplit(":", 1)
    return source, target


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (
        ".venv",
        "data",
        ".git",
        "bench/results",
        ".env",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        "**/__pycache__",
    ):
        assert entry in lines, entry


def test_dockerfile_chooses_torch_runs_unprivileged_and_checks_health() -> None:
    text = (REPO / "Dockerfile").read_text()
    instructions = [
        line.split(None, 1)
        for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1] for op, rest in instructions if op == "ARG"
    }
    assert args["TORCH"].startswith("cu"), "a GPU host gets CUDA torch by default"
    assert "download.pytorch.org/whl/${TORCH}" in text
    users = [rest.strip() for op, rest in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    (check,) = [rest for op, rest in instructions if op == "HEALTHCHECK"]
    assert "/readyz" in check
    # The USER comes before the CMD that starts the service.
    ops = [op for op, _ in instructions]
    assert ops.index("USER") < ops.index("CMD")
