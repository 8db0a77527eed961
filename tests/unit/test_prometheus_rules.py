"""The alerting rules of deploy/prometheus are valid, tested, and about metrics that exist.

``promtool`` (Debian's ``prometheus`` package, installed by ``make system``) checks
the rules and the configuration and runs the rules' unit tests
(deploy/prometheus/rules.test.yml). The YAML is also read here: every alert must be
documented, have a firing and a quiet case in the unit tests, and watch only
metrics the worker declares and the README documents.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
CONFIG_FILE = DEPLOY / "prometheus.yml"
RULES_FILE = DEPLOY / "rules.yml"
TESTS_FILE = DEPLOY / "rules.test.yml"
CONFIG: dict[str, Any] = yaml.safe_load(CONFIG_FILE.read_text())
RULES: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text())
TESTS: dict[str, Any] = yaml.safe_load(TESTS_FILE.read_text())

ALERTS: dict[str, dict[str, Any]] = {
    rule["alert"]: rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule
}
# Every alert_rule_test case: (alertname, whether it expects the alert to fire).
CASES: list[tuple[str, bool]] = [
    (case["alertname"], bool(case.get("exp_alerts")))
    for test in TESTS["tests"]
    for case in test.get("alert_rule_test", [])
]
RULE_METRICS = sorted(
    {name for rule in ALERTS.values() for name in re.findall(r"\bdmp_\w+", rule["expr"])}
)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: `make system` (as root) installs Debian's "
            "prometheus package, which has it",
            pytrace=False,
        )
    return path


def run(promtool: str, *args: str) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} exited {done.returncode}:\n{output}"
    return output


# --- promtool --------------------------------------------------------------------------------


def test_promtool_checks_the_rules(promtool: str) -> None:
    output = run(promtool, "check", "rules", str(RULES_FILE))
    assert f"SUCCESS: {len(ALERTS)} rules found" in output


def test_promtool_checks_the_config_and_the_rules_it_loads(promtool: str) -> None:
    output = run(promtool, "check", "config", str(CONFIG_FILE))
    assert f"SUCCESS: {len(CONFIG['rule_files'])} rule files found" in output
    assert f"SUCCESS: {len(ALERTS)} rules found" in output  # rules.yml, read through the config


def test_promtool_runs_the_rule_unit_tests(promtool: str) -> None:
    output = run(promtool, "test", "rules", str(TESTS_FILE))
    assert "SUCCESS" in output and "FAILED" not in output


# --- what the files say ----------------------------------------------------------------------


def resolved(base: Path, paths: list[str]) -> list[Path]:
    return [(base / path).resolve() for path in paths]


def test_config_and_unit_tests_load_the_rules_file_by_a_relative_path() -> None:
    # Relative, so that the same prometheus.yml works in the container (both files
    # mounted in /etc/prometheus) and here (promtool, the integration test).
    assert all(not Path(p).is_absolute() for p in CONFIG["rule_files"])
    assert resolved(DEPLOY, CONFIG["rule_files"]) == [RULES_FILE]
    assert resolved(DEPLOY, TESTS["rule_files"]) == [RULES_FILE]


def test_there_are_alerts() -> None:
    expected = {
        "DmpWorkerDown",
        "DmpStageLagGrowing",
        "DmpDeadLetterRateHigh",
        "DmpUtilisationHigh",
        "DmpRecoveryTakingLong",
    }
    assert set(ALERTS) == expected


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_has_a_duration_a_severity_and_a_text(alert: str) -> None:
    rule = ALERTS[alert]
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), "an alert needs `for:`"
    assert rule.get("labels", {}).get("severity") in ("warning", "critical")
    annotations = rule.get("annotations", {})
    assert annotations.get("summary", "").strip()
    assert annotations.get("description", "").strip()


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_has_a_firing_test_case(alert: str) -> None:
    assert (alert, True) in CASES, f"no case in {TESTS_FILE.name} expects {alert} to fire"


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_has_a_quiet_test_case(alert: str) -> None:
    assert (alert, False) in CASES, f"no case in {TESTS_FILE.name} expects {alert} not to fire"


def test_unit_tests_name_only_alerts_that_exist() -> None:
    # promtool passes a case expecting no alert of a name no rule has: a typo would hide.
    assert CASES
    assert {name for name, _ in CASES} <= set(ALERTS)


def worker_sources() -> str:
    """The worker's code: the package, its agents and its tables."""
    files = sorted(p for d in ("dmp_faust", "agents", "tables") for p in (ROOT / d).rglob("*.py"))
    return "\n".join(path.read_text() for path in files)


def test_rules_watch_dmp_metrics() -> None:
    assert {"dmp_events_invalid_total", "dmp_events_received_total"} <= set(RULE_METRICS)


@pytest.mark.parametrize("metric", RULE_METRICS)
def test_rule_metric_is_declared_by_the_worker(metric: str) -> None:
    # prometheus_client adds _total to a counter's name.
    declared = metric.removesuffix("_total")
    assert re.search(rf"[\"']{declared}[\"']", worker_sources()), (
        f"the rules watch {metric}, which the worker's code does not declare"
    )


@pytest.mark.parametrize("metric", RULE_METRICS)
def test_rule_metric_is_documented(metric: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"`{metric}\b", readme), f"README.md does not document {metric}"
