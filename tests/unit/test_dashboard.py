"""The Grafana dashboard we ship (`deploy/grafana/ragserve.json`) imports and provisions: every
panel reads the Prometheus data source through one variable, every query names only metrics
the service's /metrics exposes, and the provisioning files point at the dashboard and the
compose profile's Prometheus.

"Exposes" is read from the real app's /metrics (its metric families print their HELP and TYPE
lines before any sample), with a generator that reports an in-process engine's statistics;
the GPU gauges, which a machine without NVML leaves absent, from the metrics' own collector
with a stand-in NVML reading. Whether each query is valid PromQL and finds data is
`tests/e2e/test_prometheus.py`'s job, against a real Prometheus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from app.main import create_app
from app.metrics import LiveGauges
from app.services import Services
from pipelines.core import build_core
from pipelines.generators.vllm_engine import EngineStats
from pipelines.gpu import GpuProbe, GpuSample
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator, ShapeOnlyEmbedder
from tests.support.prometheus import (
    DASHBOARD,
    dashboard_panels,
    dashboard_queries,
    load_dashboard,
    metric_names,
)
from tests.support.servers import in_process_client

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The series a family of each type exposes, by suffix.
SERIES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
# What an operator asks of the dashboard (issue 17): a panel reads each of these.
REQUIRED = {
    "ragserve_generation_ttft_seconds_bucket": "TTFT p50/p95",
    "ragserve_generation_tokens_per_second_bucket": "tokens/s",
    "ragserve_completion_tokens_total": "completion tokens/s",
    "ragserve_generations_running": "generations running",
    "ragserve_generations_queued": "queue depth",
    "ragserve_generations_capacity": "generation capacity",
    "ragserve_retrieval_seconds_bucket": "retrieval latency by mode",
    "ragserve_requests_total": "error rate",
    "ragserve_ingest_documents_total": "ingest rate",
    "ragserve_cost_total": "cost per hour",
}
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)


@dataclass
class EngineScripted(ScriptedGenerator):
    """The scripted generator, reporting scheduler statistics as the in-process vLLM engine
    does (`VllmEngineGenerator.engine_stats`)."""

    def engine_stats(self) -> EngineStats:
        return EngineStats(kv_cache_usage=0.25, running=1, waiting=2)


class OneGpu(GpuProbe):
    """NVML's reading of one device, on a machine that has none."""

    def read(self) -> list[GpuSample]:
        return [GpuSample(index=0, utilization=0.5, memory_used_bytes=1, memory_total_bytes=2)]


def exposed_series(exposition: str) -> set[str]:
    """The series names a text exposition offers: each family's, by its type."""
    return {
        name + suffix
        for name, kind in _TYPE_LINE.findall(exposition)
        for suffix in SERIES.get(kind, ("",))
    }


@pytest.fixture(scope="module")
async def exposed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """What the service's /metrics and the GPU collector offer to a dashboard."""
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("dash") / "data")
    core = build_core(settings, embedder=ShapeOnlyEmbedder())
    try:
        services = Services(core=core)
        services.set_generator(EngineScripted())
        async with in_process_client(create_app(settings, services=services)) as client:
            response = await client.get("/metrics")
        assert response.status_code == 200
        served = response.text
    finally:
        await core.close()
    registry = CollectorRegistry()
    registry.register(LiveGauges(lambda: None, OneGpu()))
    return exposed_series(served) | exposed_series(generate_latest(registry).decode())


def test_dashboard_is_import_ready_json_with_a_prometheus_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard.get("id") is None  # an id from another Grafana would clash on import
    # `${DS_...}` import placeholders break file provisioning ("Datasource ... was not found"):
    # a data source variable works for import and provisioning both.
    assert "__inputs" not in dashboard
    assert "${DS_" not in DASHBOARD.read_text()
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in dashboard_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_every_dashboard_panel_reads_prometheus_through_the_variable() -> None:
    queried = 0
    for panel in dashboard_panels(load_dashboard()):
        if panel["type"] == "row":
            assert not panel.get("targets"), panel["title"]
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
            queried += 1
    assert queried > 0
    for variable in load_dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_every_dashboard_query_names_only_metrics_that_metrics_exposes(
    exposed: set[str],
) -> None:
    dashboard = load_dashboard()
    unknown = {
        (query.panel, name)
        for query in dashboard_queries(dashboard)
        for name in query.metrics
        if name not in exposed
    }
    assert not unknown, f"queries name metrics /metrics does not expose: {sorted(unknown)}"
    for query in dashboard_queries(dashboard):
        assert query.metrics, f"{query.panel} {query.ref} reads no ragserve metric"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert metric_names(variable["definition"]) <= exposed, variable["name"]


def test_dashboard_has_a_panel_for_each_quantity_an_operator_watches() -> None:
    named = set().union(*(query.metrics for query in dashboard_queries(load_dashboard())))
    missing = {what for name, what in REQUIRED.items() if name not in named}
    assert not missing, f"no panel shows: {sorted(missing)}"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_provisioning_loads_the_dashboard_and_the_prometheus_datasource() -> None:
    compose = _yaml(REPO / "docker-compose.yml")["services"]["grafana"]
    # Container path -> the file or folder here that compose mounts there.
    mounts = {
        str(v).split(":")[1]: REPO / str(v).split(":")[0]
        for v in compose["volumes"]
        if str(v).startswith("./")
    }
    provisioning = Path(next(t for t, here in mounts.items() if here == PROVISIONING))

    (provider,) = _yaml(PROVISIONING / "dashboards" / "ragserve.yml")["providers"]
    assert provider["type"] == "file"
    folder = provider["options"]["path"]
    served = {t: here for t, here in mounts.items() if Path(t).parent == Path(folder)}
    assert served == {f"{folder}/ragserve.json": DASHBOARD}, (folder, mounts)
    assert not Path(folder).is_relative_to(provisioning), "dashboards beside the provisioning"

    (source,) = _yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == DATASOURCE["type"]
    # The dashboard's variable starts on the default data source: this one.
    assert source["isDefault"] is True
    assert source["access"] == "proxy"  # Grafana's server asks Prometheus, not the browser
