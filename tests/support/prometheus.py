"""A real Prometheus (Debian's) on 127.0.0.1 scraping a test's server, configured by the file we
ship (`deploy/prometheus.yml`): rendered into a temp dir, started, queried through its HTTP
API, stopped by pid.

Only the lines the shipped file marks `test:` change (the scrape target, the scrape and evaluation
intervals and the scrape timeout: 1 s, so a test waits a second for a scrape, not fifteen). Each
substitution must match the shipped text exactly once: a rewrite of the file that moves those
lines fails here loudly instead of testing a different config.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import stop
from tests.support.sockets import free_port

PROMETHEUS = os.environ.get("RAG_TEST_PROMETHEUS", "/usr/bin/prometheus")
PROMTOOL = os.environ.get("RAG_TEST_PROMTOOL", "/usr/bin/promtool")
SHIPPED_CONF = Path(__file__).resolve().parents[2] / "deploy" / "prometheus.yml"
SHIPPED_TARGET = "ragserve:8000"
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ragserve.json"
START_TIMEOUT_S = 30.0
CHECK_TIMEOUT_S = 30.0
WAIT_S = 30.0  # the default bound on a wait for a scrape to show something
_POLL_S = 0.2
_START_ATTEMPTS = 3  # another process may take the free port before Prometheus binds it


def prometheus_missing() -> str | None:
    """Why the tests cannot start a Prometheus here, or None when they can."""
    for tool in (PROMETHEUS, PROMTOOL):
        if not os.access(tool, os.X_OK):
            return f"Debian's prometheus is not installed ({tool} missing: `make services`)"
    return None


def render(source: str, *, target: str, interval: str = "1s") -> str:
    """The shipped config scraping `target` (`host:port`), scraping and evaluating every
    `interval`; everything else as shipped."""
    replacements = [
        (
            "scrape_interval: 15s # test: scrape interval",
            f"scrape_interval: {interval} # test: scrape interval",
        ),
        (
            "evaluation_interval: 15s # test: evaluation interval",
            f"evaluation_interval: {interval} # test: evaluation interval",
        ),
        # A timeout may not exceed the interval: Prometheus refuses such a config.
        (
            "scrape_timeout: 10s # test: scrape timeout",
            f"scrape_timeout: {interval} # test: scrape timeout",
        ),
        (
            f'targets: ["{SHIPPED_TARGET}"] # test: scrape target',
            f'targets: ["{target}"] # test: scrape target',
        ),
    ]
    for old, new in replacements:
        found = source.count(old)
        if found != 1:
            raise AssertionError(
                f"{SHIPPED_CONF} has {found} of {old!r} where the test expects 1: keep the "
                "lines marked 'test:' as they are, or update tests/support/prometheus.py"
            )
        source = source.replace(old, new)
    return source


class PromQLError(AssertionError):
    """Prometheus answered a query with an error (a bad expression, a bad parameter)."""


@dataclass
class Prometheus:
    """A running Prometheus: its URL, its work dir and a client of its HTTP API."""

    url: str
    workdir: Path
    client: httpx.Client

    @property
    def log(self) -> Path:
        return self.workdir / "prometheus.log"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of Prometheus's log, for a failing test's message."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(prometheus wrote no log)"
        return f"prometheus log:\n{text[-chars:]}" if text else "(prometheus's log is empty)"

    def api(self, path: str, **params: str) -> Any:
        """The `data` of one answer of the HTTP API (`/api/v1/<path>`); PromQLError when
        Prometheus answers with an error."""
        response = self.client.get(f"/api/v1/{path}", params=params)
        try:
            body = response.json()
        except ValueError:
            answer = f"HTTP {response.status_code} {response.text[:500]}"
            raise PromQLError(f"{path}: {answer}") from None
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now: [{"metric": {...}, "value": [t, "v"]}].
        A scalar or string result is returned as one sample with no labels."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The one value `expr` evaluates to (e.g. a `sum(...)`); None while it has no sample."""
        samples = self.query(expr)
        if not samples:
            return None
        if len(samples) != 1:
            raise AssertionError(f"{expr} gave {len(samples)} series, expected one: {samples}")
        return float(samples[0]["value"][1])

    def wait_for_value(
        self,
        expr: str,
        condition: Callable[[float | None], bool],
        *,
        timeout_s: float = WAIT_S,
        what: str = "",
    ) -> float | None:
        """Poll `expr` until its value meets `condition` (new scrapes arrive every interval);
        AssertionError with the last value seen once `timeout_s` has passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.value(expr)
            if condition(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what or expr}: still {seen!r} after {timeout_s} s of scrapes\n"
                    f"{self.targets_summary()}\n{self.log_tail()}"
                )
            time.sleep(_POLL_S)

    def wait_for_samples(self, expr: str, *, timeout_s: float = WAIT_S) -> list[dict[str, Any]]:
        """Poll `expr` until it gives samples (a `rate()` needs two scrapes of a series);
        AssertionError once `timeout_s` has passed."""
        deadline = time.monotonic() + timeout_s
        while not (samples := self.query(expr)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{expr}: no samples after {timeout_s} s of scrapes\n"
                    f"{self.targets_summary()}\n{self.log_tail()}"
                )
            time.sleep(_POLL_S)
        return samples

    def targets_summary(self) -> str:
        """Each active target's job, URL, health and last error: why a scrape shows nothing."""
        try:
            active = self.api("targets", state="active")["activeTargets"]
        except (PromQLError, httpx.HTTPError) as exc:
            return f"(targets unavailable: {exc})"
        return "targets: " + "; ".join(
            f"{t['labels'].get('job')} {t['scrapeUrl']} {t['health']} {t.get('lastError', '')!r}"
            for t in active
        )

    def wait_until_target_up(self, job: str = "ragserve", *, timeout_s: float = WAIT_S) -> None:
        """Until a scrape of `job` has succeeded (its `up` is 1)."""
        self.wait_for_value(
            f'up{{job="{job}"}}', lambda v: v == 1, timeout_s=timeout_s, what=f"up of job {job}"
        )


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


# -- the shipped Grafana dashboard's queries, as Prometheus runs them -------------------------

# Grafana's variables in the dashboard's queries and what a test puts in their place: every
# replica, and a window of a minute (at least four scrapes at the test's 1 s interval).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$instance": ".*",
}
_METRIC = re.compile(r"\bragserve_[A-Za-z0-9_:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a label value: `status=~"5.."`


@dataclass(frozen=True)
class PanelQuery:
    """One target of one dashboard panel: its PromQL with Grafana's variables in it."""

    panel: str
    ref: str
    expr: str

    @property
    def promql(self) -> str:
        """The query as Prometheus gets it from Grafana (variables filled in)."""
        expr = self.expr
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        return expr

    @property
    def metrics(self) -> set[str]:
        return metric_names(self.expr)


def metric_names(expr: str) -> set[str]:
    """The ragserve metric names a PromQL expression reads (label values set aside: a value
    may look like a name without being one)."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included, rows themselves included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(panel=str(panel.get("title")), ref=str(target.get("refId")), expr=target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ragserve-prometheus-", dir="/tmp"))


def check_config(target: str | None = None) -> subprocess.CompletedProcess[str]:
    """`promtool check config` on the shipped config: as shipped, or as `prometheus_server`
    renders it for `target` (`host:port`); nothing is started."""
    if (missing := prometheus_missing()) is not None:
        raise RuntimeError(missing)
    source = SHIPPED_CONF.read_text()
    workdir = _workdir()
    try:
        conf = workdir / "prometheus.yml"
        conf.write_text(source if target is None else render(source, target=target))
        return subprocess.run(
            [PROMTOOL, "check", "config", str(conf)],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            check=False,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def prometheus_server(target_url: str, *, interval: str = "1s") -> Iterator[Prometheus]:
    """Debian's Prometheus with the shipped config scraping `target_url`
    (`http://127.0.0.1:PORT`) every `interval`, on a free loopback port with a fresh TSDB in a
    temp dir, ready (`/-/ready`) when the block starts, stopped when it exits."""
    if (missing := prometheus_missing()) is not None:
        raise RuntimeError(missing)
    target = target_url.removeprefix("http://").rstrip("/")
    workdir = _workdir()
    conf = workdir / "prometheus.yml"
    conf.write_text(render(SHIPPED_CONF.read_text(), target=target, interval=interval))
    process: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            log = workdir / "prometheus.log"
            with log.open("wb") as out:
                # A session of its own, so that a SIGKILL reaches anything it started.
                process = subprocess.Popen(
                    [
                        PROMETHEUS,
                        f"--config.file={conf}",
                        f"--storage.tsdb.path={workdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    start_new_session=True,
                )
            url = f"http://127.0.0.1:{port}"
            try:
                if _wait_until_ready(process, url):
                    break
            except BaseException:
                stop(process)
                raise
            output = log.read_text(errors="replace")
            if attempt == _START_ATTEMPTS - 1 or "address already in use" not in output:
                raise RuntimeError(f"prometheus exited with {process.returncode}: {output[-3000:]}")
        with httpx.Client(base_url=url, timeout=httpx.Timeout(10.0)) as client:
            yield Prometheus(url=url, workdir=workdir, client=client)
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_ready(process: subprocess.Popen[bytes], url: str) -> bool:
    """True once Prometheus answers 200 on `/-/ready` (its TSDB open, the config loaded);
    False if it exited (the caller reads why)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:  # not listening yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"prometheus was not ready at {url} within {START_TIMEOUT_S} s")
        time.sleep(0.05)
    return False
