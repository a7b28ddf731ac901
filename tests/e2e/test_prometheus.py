"""A real Prometheus (Debian's) with the config we ship, `deploy/prometheus.yml`, scraping a
live service that answered a few questions: what it reads back through its HTTP API (a TTFT
quantile, the token counters, the generations and searches by mode) is what the answers
reported, and every query of the shipped Grafana dashboard is PromQL that Prometheus runs.

Nothing is timed: the test polls Prometheus, within a deadline, until the scrape that holds
all the answers has happened (the generations counter reaches the number asked), then reads
the rest, which no later request changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from pipelines.types import SEARCH_MODES
from tests.support.fakes import ScriptedGenerator
from tests.support.prometheus import (
    Prometheus,
    check_config,
    dashboard_queries,
    is_finite,
    load_dashboard,
    prometheus_missing,
    prometheus_server,
)
from tests.support.servers import ThreadedLiveServer
from tests.support.sse import parse_events

pytestmark = pytest.mark.slow

ASKS = 3  # POST /v1/ask
STREAMS = 2  # POST /v1/ask/stream
QUESTIONS = [
    "How hot is the surface of Venus?",
    "Which planet has the tallest volcano?",
    "How long should coffee brew?",
]
SEARCH = "What is the largest planet?"
HTTP_TIMEOUT_S = 60.0
# The metrics a scripted generator and the test's requests give samples to: every dashboard
# query reading only these must find data. The rest (ingest, cost, aborted and failed
# generations, empty retrievals, the engine's and the GPUs') have none in this test.
EXERCISED = {
    "ragserve_generation_ttft_seconds_bucket",
    "ragserve_generation_inter_token_seconds_bucket",
    "ragserve_generation_tokens_per_second_bucket",
    "ragserve_generation_queue_wait_seconds_bucket",
    "ragserve_prompt_tokens_total",
    "ragserve_completion_tokens_total",
    "ragserve_generations_total",
    "ragserve_generations_running",
    "ragserve_generations_queued",
    "ragserve_generations_capacity",
    "ragserve_retrieval_seconds_bucket",
    "ragserve_retrieval_hits_bucket",
    "ragserve_requests_total",
    "ragserve_request_seconds_bucket",
}


@dataclass(frozen=True)
class Traffic:
    """What the test asked of the service and what its answers reported."""

    generations: int
    searches: dict[str, int]  # by mode
    prompt_tokens: int
    completion_tokens: int


@pytest.fixture(scope="module")
def prometheus(live_server: ThreadedLiveServer) -> Iterator[Prometheus]:
    """Debian's Prometheus scraping the live server every second, once a scrape succeeded."""
    if (missing := prometheus_missing()) is not None:
        pytest.fail(missing)
    with prometheus_server(live_server.url) as running:
        running.wait_until_target_up()
        yield running


@pytest.fixture(scope="module")
def traffic(
    live_server: ThreadedLiveServer, scripted: ScriptedGenerator, prometheus: Prometheus
) -> Traffic:
    """Questions answered as JSON and as streams, and a search in each mode, sent after
    Prometheus first scraped the service (so the scrapes that count them are new ones)."""
    scripted.reset()
    prompt = completion = 0
    searches: dict[str, int] = dict.fromkeys(SEARCH_MODES, 0)
    with httpx.Client(base_url=live_server.url, timeout=HTTP_TIMEOUT_S) as client:
        for i in range(ASKS):
            r = client.post("/v1/ask", json={"question": QUESTIONS[i % len(QUESTIONS)]})
            assert r.status_code == 200, r.text
            usage = r.json()["usage"]
            prompt += usage["prompt_tokens"]
            completion += usage["completion_tokens"]
        for i in range(STREAMS):
            r = client.post("/v1/ask/stream", json={"question": QUESTIONS[i % len(QUESTIONS)]})
            assert r.status_code == 200, r.text
            events = parse_events(r.text)
            assert events[-1].event == "done", events[-1]
            usage = events[-1].data["usage"]
            prompt += usage["prompt_tokens"]
            completion += usage["completion_tokens"]
        for mode in SEARCH_MODES:
            r = client.post("/v1/search", json={"query": SEARCH, "mode": mode})
            assert r.status_code == 200, r.text
            assert r.json()["hits"], f"{mode} search found nothing"
            searches[mode] += 1
    assert prompt > 0 and completion > 0
    return Traffic(ASKS + STREAMS, searches, prompt, completion)


def test_shipped_prometheus_config_passes_promtool_check() -> None:
    if (missing := prometheus_missing()) is not None:
        pytest.fail(missing)
    for target in (None, "127.0.0.1:8000"):  # as shipped, and as the tests render it
        r = check_config(target)
        assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_reads_back_ttft_and_the_token_counts_the_answers_reported(
    prometheus: Prometheus, traffic: Traffic
) -> None:
    n = traffic.generations
    prometheus.wait_for_value(
        "sum(ragserve_generations_total)", lambda v: v == n, what=f"{n} generations scraped"
    )
    assert prometheus.value('sum(ragserve_generations_total{outcome="stop"})') == n
    assert prometheus.value("sum(ragserve_completion_tokens_total)") == traffic.completion_tokens
    assert prometheus.value("sum(ragserve_prompt_tokens_total)") == traffic.prompt_tokens
    assert prometheus.value("sum(ragserve_generation_ttft_seconds_count)") == n
    ttft = prometheus.value(
        "histogram_quantile(0.5, sum by (le) (ragserve_generation_ttft_seconds_bucket))"
    )
    assert is_finite(ttft) and ttft is not None and ttft >= 0, ttft
    p95 = prometheus.value(
        "histogram_quantile(0.95, sum by (le) (ragserve_generation_ttft_seconds_bucket))"
    )
    assert is_finite(p95) and p95 is not None and p95 >= ttft, (ttft, p95)


def test_prometheus_reads_back_retrieval_by_mode_and_requests_by_route(
    prometheus: Prometheus, traffic: Traffic
) -> None:
    n = traffic.generations
    prometheus.wait_for_value(
        "sum(ragserve_generations_total)", lambda v: v == n, what=f"{n} generations scraped"
    )
    # Each answer retrieved once, in the default mode (hybrid); each search in its own.
    expected = dict(traffic.searches)
    expected["hybrid"] += n
    for mode, count in expected.items():
        seen = prometheus.wait_for_value(
            f'sum(ragserve_retrieval_seconds_count{{phase="total",mode="{mode}"}})',
            equals(count),
            what=f"{count} {mode} retrievals scraped",
        )
        assert seen == count
    # The stream's request is counted once its response ended: wait for that scrape.
    for route, count in (
        ("/v1/ask", ASKS),
        ("/v1/ask/stream", STREAMS),
        ("/v1/search", sum(traffic.searches.values())),
    ):
        prometheus.wait_for_value(
            f'sum(ragserve_requests_total{{route="{route}",status="200"}})',
            equals(count),
            what=f"{count} requests to {route} scraped",
        )


def test_every_dashboard_query_runs_in_prometheus_and_finds_what_the_service_did(
    prometheus: Prometheus, traffic: Traffic
) -> None:
    n = traffic.generations
    prometheus.wait_for_value(
        "sum(ragserve_generations_total)", lambda v: v == n, what=f"{n} generations scraped"
    )
    dashboard = load_dashboard()
    for query in dashboard_queries(dashboard):
        prometheus.query(query.promql)  # a PromQLError if Prometheus refuses it
        if query.metrics <= EXERCISED:
            # A rate() finds data once two scrapes saw the series.
            for sample in prometheus.wait_for_samples(query.promql):
                value = float(sample["value"][1])
                # Quantiles of a rate may be NaN where a window saw no new observation.
                assert math.isnan(value) or value >= 0, (query.panel, sample)
    # The replica variable lists the scraped service.
    instances = prometheus.api("label/instance/values", **{"match[]": "ragserve_requests_total"})
    assert instances == [prometheus_target(prometheus)], instances


def equals(expected: float) -> Callable[[float | None], bool]:
    return lambda value: value == expected


def prometheus_target(prometheus: Prometheus) -> str:
    (target,) = prometheus.api("targets", state="active")["activeTargets"]
    return str(target["labels"]["instance"])
