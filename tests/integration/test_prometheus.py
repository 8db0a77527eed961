"""A real Prometheus server (Debian's ``prometheus``) scrapes a live worker.

Prometheus runs with deploy/prometheus/prometheus.yml and the rules it loads,
changed only where the test must: its ``dmp-faust`` job scrapes the test's worker
(and a port where nothing listens, for the worker-down alert) every second. A
known mix of events goes to the worker; once it has processed them, the counters
are read back through PromQL over Prometheus's HTTP API.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.events import GOOGLEBOT, MINUTE, T0, encode, event
from tests.integration.support import PROJECT, Worker, call, free_port, produce, wait_until
from tests.integration.test_pipeline import outcome_counts, send_http

pytestmark = pytest.mark.integration

DEPLOY = PROJECT / "deploy" / "prometheus"
JOB = "dmp-faust"
RULES: dict[str, Any] = yaml.safe_load((DEPLOY / "rules.yml").read_text())
RULE_METRICS = sorted(
    {
        name
        for group in RULES["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\bdmp_\w+", rule["expr"])
    }
)
OUTCOMES = ("accepted", "invalid", "duplicate", "bot")


# --- the server ------------------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str
    worker: str  # host:port of the live worker, its `instance` label
    dead: str  # host:port of a target where nothing listens
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = call("GET", f"{self.url}/api/v1/{path}{query}")
        assert status == 200 and isinstance(body, dict), f"{path}: {status} {body}"
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str, at: str | None = None) -> list[dict[str, Any]]:
        """An instant query, evaluated now or at the Unix time ``at``."""
        data = self.api("query", query=promql, **({"time": at} if at else {}))
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, promql: str, at: str | None = None) -> float | None:
        """The value of a query that answers one series (None when it answers none)."""
        result = self.query(promql, at)
        assert len(result) <= 1, f"{promql}: {result}"
        return float(result[0]["value"][1]) if result else None

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def scrape_config(worker: str, dead: str, own: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, scraping the test's targets every second."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s"}
    config["global"]["evaluation_interval"] = "1s"
    # Relative to the deploy directory, where the original config is read from.
    config["rule_files"] = [str((DEPLOY / path).resolve()) for path in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert JOB in jobs, f"deploy/prometheus/prometheus.yml has no {JOB} job"
    jobs[JOB]["scrape_interval"] = "1s"
    jobs[JOB]["static_configs"] = [{"targets": [worker, dead]}]
    if "prometheus" in jobs:
        jobs["prometheus"]["scrape_interval"] = "1s"
        jobs["prometheus"]["static_configs"] = [{"targets": [own]}]
    return config


@pytest.fixture(scope="module")
def prometheus(
    module_worker: Worker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the prometheus server is not installed: `make system` (as root) installs "
            "Debian's prometheus package",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("prometheus")
    own = f"127.0.0.1:{free_port()}"
    worker, dead = f"127.0.0.1:{module_worker.port}", f"127.0.0.1:{free_port()}"
    config_file = root / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(scrape_config(worker, dead, own)))
    log_path = root / "prometheus.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address={own}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Prometheus(f"http://{own}", worker, dead, process, log_path)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited with {process.returncode}")
            try:
                return call("GET", server.url + "/-/ready")[0] == 200
            except OSError:
                return False

        try:
            wait_until(ready, 60, "prometheus to be ready", interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{server.tail()}") from None
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


# --- the events ------------------------------------------------------------------------------


@dataclass
class Sent:
    """What was sent, and what each event must come to (counted as it is built)."""

    kafka: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    http: list[Any] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, source: str, item: Any, outcome: str, reason: str | None = None) -> None:
        if source == "kafka":
            self.kafka.append((None, item if isinstance(item, bytes) else encode(item)))
        else:
            self.http.append(item)
        self.outcomes[outcome] += 1
        if reason is not None:
            self.reasons[reason] += 1

    @property
    def received(self) -> int:
        return len(self.kafka) + len(self.http)


def mix() -> Sent:
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    ts = T0 + 50 * MINUTE
    sent = Sent()
    on_kafka = [event("impression", ts + i, f"pm{i}", campaign) for i in range(30)]
    over_http = [event("click", ts + i, f"pm{i}", campaign) for i in range(10)]
    for body in on_kafka:
        sent.add("kafka", body, "accepted")
    for body in over_http:
        sent.add("http", body, "accepted")
    for body in over_http[:4]:  # the same event_id again, the other way in
        sent.add("kafka", body, "duplicate")
    for body in on_kafka[:3]:
        sent.add("http", body, "duplicate")
    for i in range(5):
        bot = event("impression", ts + i, "crawler", campaign, user_agent=GOOGLEBOT)
        sent.add("kafka" if i < 3 else "http", bot, "bot")
    for _ in range(3):
        sent.add("kafka", b"not json", "invalid", "malformed_json")
    for _ in range(2):
        sent.add(
            "kafka", {**event("page_view", ts, "pm"), "type": "purchase"}, "invalid", "unknown_type"
        )
    for _ in range(2):
        nameless = {k: v for k, v in event("page_view", ts, "pm").items() if k != "event_id"}
        sent.add("http", nameless, "invalid", "missing_field")
    sent.add("http", "text", "invalid", "not_an_object")
    return sent


@pytest.fixture(scope="module")
def sent(module_worker: Worker, prometheus: Prometheus) -> Sent:
    """The mix, sent once Prometheus has a sample of the worker's counters from before it,
    and processed by the worker and scraped by Prometheus when this returns."""
    received = f'sum(dmp_events_received_total{{job="{JOB}"}})'
    wait_until(lambda: prometheus.query(received), 60, "prometheus to scrape the worker")
    before = outcome_counts(module_worker)
    assert set(before.values()) == {0}, f"a fresh worker has counted events: {before}"

    sent = mix()
    produce(module_worker.bootstrap, f"{module_worker.prefix}.events.raw", sent.kafka)
    half = len(sent.http) // 2  # two batches, each with events it accepts: 202
    for batch in (sent.http[:half], sent.http[half:]):
        status, body = send_http(module_worker, batch)
        assert status == 202, body

    total = before["received"] + sent.received

    def processed() -> dict[str, float]:
        c = outcome_counts(module_worker)
        done = c["received"] == total and c["received"] == sum(c[k] for k in OUTCOMES)
        return c if done else {}

    after = wait_until(processed, 90, f"the worker to account for {sent.received} events")
    assert {k: after[k] - before[k] for k in OUTCOMES} == dict(sent.outcomes)

    # Received is counted before the outcome: a scrape can come between the two.
    outcomes = " + ".join(f'sum(dmp_events_{k}_total{{job="{JOB}"}})' for k in OUTCOMES)

    def scraped() -> bool:
        return prometheus.value(received) == total and prometheus.value(outcomes) == total

    wait_until(scraped, 30, "prometheus to scrape the final counters")
    return sent


# --- the tests -------------------------------------------------------------------------------


def sum_of(metric: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f'sum{grouping} ({metric}{{job="{JOB}"}})'


def test_prometheus_scrapes_the_worker(prometheus: Prometheus, sent: Sent) -> None:
    up = prometheus.query(f'up{{job="{JOB}"}} == 1')
    assert [series["metric"]["instance"] for series in up] == [prometheus.worker]
    assert prometheus.value(f'up{{job="{JOB}", instance="{prometheus.dead}"}}') == 0


def test_counters_equal_what_was_sent(prometheus: Prometheus, sent: Sent) -> None:
    by_source = {
        s["metric"]["source"]: float(s["value"][1])
        for s in prometheus.query(sum_of("dmp_events_received_total", "source"))
    }
    assert by_source == {"kafka": len(sent.kafka), "http": len(sent.http), "replay": 0}
    for outcome in ("accepted", "duplicate", "bot"):
        assert prometheus.value(sum_of(f"dmp_events_{outcome}_total")) == sent.outcomes[outcome]
    by_reason = {
        s["metric"]["reason"]: float(s["value"][1])
        for s in prometheus.query(sum_of("dmp_events_invalid_total", "reason"))
    }
    assert {r: n for r, n in by_reason.items() if n} == dict(sent.reasons)
    assert set(sent.reasons) < set(by_reason)  # every reason is exported, zeros included
    assert sum(by_reason.values()) == sent.outcomes["invalid"]


def test_increase_and_rate_are_positive_and_consistent(prometheus: Prometheus, sent: Sent) -> None:
    window = "10m"  # longer than Prometheus has run: every sample is in it
    # Evaluated at the last scrape: with the first sample at 0 (before the events) and
    # the last at the end of the window, increase() extrapolates neither way.
    scraped = prometheus.value(f'timestamp(up{{job="{JOB}", instance="{prometheus.worker}"}})')
    assert scraped is not None
    at = f"{scraped:.3f}"

    def over(function: str, metric: str) -> float:
        found = prometheus.value(f'sum({function}({metric}{{job="{JOB}"}}[{window}]))', at)
        assert found is not None, f"{function}({metric}) answered nothing"
        return found

    names = ("received", *OUTCOMES)
    increase = {k: over("increase", f"dmp_events_{k}_total") for k in names}
    rate = {k: over("rate", f"dmp_events_{k}_total") for k in names}
    assert increase == pytest.approx({"received": sent.received, **sent.outcomes}, rel=1e-6)
    assert increase["received"] == pytest.approx(sum(increase[k] for k in OUTCOMES), rel=1e-9)
    assert all(rate[k] > 0 for k in names), rate
    assert rate["received"] == pytest.approx(sum(rate[k] for k in OUTCOMES), rel=1e-9)
    assert rate["received"] == pytest.approx(increase["received"] / 600, rel=1e-6)


def test_the_rules_file_is_loaded_and_evaluates(prometheus: Prometheus, sent: Sent) -> None:
    wanted = {
        group["name"]: sorted(rule.get("alert") or rule["record"] for rule in group["rules"])
        for group in RULES["groups"]
    }

    def evaluated() -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return groups if rules and all(rule["health"] != "unknown" for rule in rules) else []

    groups = wait_until(evaluated, 30, "the rules to be evaluated")
    assert {g["name"]: sorted(r["name"] for r in g["rules"]) for g in groups} == wanted
    assert all(g["file"] == str((DEPLOY / "rules.yml").resolve()) for g in groups)
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]]
    assert [b for b in broken if b[1]] == []
    assert {r["health"] for g in groups for r in g["rules"]} == {"ok"}


def test_worker_down_alert_catches_the_unreachable_target_only(
    prometheus: Prometheus, sent: Sent
) -> None:
    def down_alerts() -> list[dict[str, Any]]:
        alerts = prometheus.api("alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "DmpWorkerDown"]

    found = wait_until(down_alerts, 30, "DmpWorkerDown for the unreachable target")
    assert [a["labels"]["instance"] for a in found] == [prometheus.dead]
    assert found[0]["state"] in ("pending", "firing")
    assert found[0]["labels"]["severity"] == "critical"


@pytest.mark.parametrize("metric", RULE_METRICS)
def test_the_worker_exports_what_the_rules_watch(
    prometheus: Prometheus, sent: Sent, metric: str
) -> None:
    series = prometheus.query(f'{metric}{{job="{JOB}", instance="{prometheus.worker}"}}')
    assert series, f"the rules watch {metric}, which the live worker does not export"


def test_stage_lag_covers_the_partitions_and_drains_to_zero(
    module_worker: Worker, prometheus: Prometheus, sent: Sent
) -> None:
    """Every stage of /health's stage_lag has a series per partition the worker owns,
    and every series comes to 0 once the events are processed."""
    lag = f'dmp_stage_lag{{job="{JOB}", instance="{prometheus.worker}"}}'
    seen: list[Any] = []

    def drained() -> bool:
        status, health = call("GET", module_worker.url + "/health")
        assert status == 200, health
        stages: dict[str, dict[str, float]] = {}
        for series in prometheus.query(lag):
            labels = series["metric"]
            stages.setdefault(labels["stage"], {})[labels["partition"]] = float(series["value"][1])
        partitions = {str(p) for p in health["active_partitions"]}
        seen[:] = [stages, sorted(partitions), sorted(health.get("stage_lag", {}))]
        return (
            bool(stages and partitions)
            and set(stages) == set(health.get("stage_lag", {}))
            and all(set(figures) == partitions for figures in stages.values())
            and all(value == 0 for figures in stages.values() for value in figures.values())
        )

    try:
        wait_until(drained, 60, "dmp_stage_lag to cover every partition and come to 0")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: dmp_stage_lag by stage {seen[0]}; partitions {seen[1]}; "
            f"stages in /health {seen[2]}"
        ) from None
