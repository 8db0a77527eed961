"""The Docker stack agrees with the code it runs.

There is no Docker engine in CI, so these checks stand in for a smoke run of
``docker compose up``: docker-compose.yml, the Dockerfile, .dockerignore and
deploy/ (Prometheus, Grafana) are parsed and checked against the worker's
settings (``Settings.from_env``), the CLI's entry point, the contract's metric
names and the files of the repository.
"""

from __future__ import annotations

import json
import re
import shlex
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from dmp_faust.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())

# The contract's metrics: those the Grafana dashboard must show, and the rest.
DASHBOARD_METRICS = [
    "dmp_events_received_total",
    "dmp_events_accepted_total",
    "dmp_events_invalid_total",
    "dmp_events_duplicate_total",
    "dmp_events_bot_total",
    "dmp_event_latency_seconds",
    "dmp_stage_lag",
]
CONTRACT_METRICS = {*DASHBOARD_METRICS, "dmp_profiles", "dmp_segment_size", "dmp_alerts_total"}


# --- reading the compose file ----------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: object) -> str:
    """A compose value as ``docker compose up`` sees it with none of its variables set."""
    text = _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))
    return text.replace("$$", "$")


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(value) for key, value in env.items()}


def command(service: str) -> list[str]:
    cmd = SERVICES[service].get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def published_ports(service: str) -> set[int]:
    """Container ports the service publishes on the host."""
    ports = set()
    for port in SERVICES[service].get("ports", []):
        target = port["target"] if isinstance(port, dict) else str(port).rsplit(":", 1)[-1]
        ports.add(int(str(target).split("/")[0]))
    return ports


def mounts(service: str) -> list[tuple[str, str]]:
    """``(source, target)`` of every volume; a bind mount's source starts with . or /."""
    result = []
    for volume in SERVICES[service].get("volumes", []):
        if isinstance(volume, dict):
            result.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            result.append((source, target))
    return result


def bind_sources(service: str) -> list[str]:
    return [source for source, _ in mounts(service) if source.startswith((".", "/"))]


def host_path(service: str, container_path: str) -> Path | None:
    """The repository file a service sees at ``container_path`` through a bind mount."""
    wanted = PurePosixPath(container_path)
    for source, target in mounts(service):
        if source.startswith(".") and wanted.is_relative_to(target):
            return ROOT / source / wanted.relative_to(target)
    return None


def settings_of(service: str) -> Settings:
    return Settings.from_env(environment(service))


WORKERS = sorted(name for name in SERVICES if command(name)[:2] == ["dmp-faust", "worker"])
DMP_VARIABLES = sorted(
    (name, key) for name in SERVICES for key in environment(name) if key.startswith("DMP_")
)
KAFKA_ENV = environment("kafka") if "kafka" in SERVICES else {}


def listeners(value: str) -> dict[str, str]:
    """``NAME://host:port,...`` as ``{NAME: "host:port"}``."""
    return dict(item.split("://", 1) for item in value.split(","))


# --- services ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["kafka", "worker", "prometheus", "grafana", "generator"])
def test_service_exists(service: str) -> None:
    assert service in SERVICES


def test_worker_service_runs_a_worker() -> None:
    assert "worker" in WORKERS, command("worker")


def test_generator_is_opt_in_and_generates() -> None:
    generator = SERVICES["generator"]
    assert "demo" in generator.get("profiles", [])
    assert command("generator") == ["dmp-faust", "generate"]


@pytest.mark.parametrize("service", sorted(n for n, s in SERVICES.items() if "build" in s))
def test_built_services_run_the_cli(service: str) -> None:
    assert command(service)[:1] == ["dmp-faust"]
    assert command(service)[1:2] in (["worker"], ["generate"])


# --- kafka ---------------------------------------------------------------------------------------


def test_kafka_is_apache_kafka_in_kraft_mode() -> None:
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert set(KAFKA_ENV["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in KAFKA_ENV


def test_kafka_controller_quorum_is_this_node() -> None:
    voter = KAFKA_ENV["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    node_id, address = voter.split("@")
    assert node_id == KAFKA_ENV["KAFKA_NODE_ID"]
    controller_name = KAFKA_ENV["KAFKA_CONTROLLER_LISTENER_NAMES"]
    controller = listeners(KAFKA_ENV["KAFKA_LISTENERS"])[controller_name]
    assert address.rsplit(":", 1)[1] == controller.rsplit(":", 1)[1]


@pytest.mark.parametrize(
    "key",
    [
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ],
)
def test_kafka_internal_topics_fit_one_broker(key: str) -> None:
    assert KAFKA_ENV.get(key) == "1"


def test_kafka_has_a_healthcheck() -> None:
    assert SERVICES["kafka"]["healthcheck"]["test"]


@pytest.mark.parametrize("service", WORKERS)
def test_worker_waits_for_a_healthy_kafka(service: str) -> None:
    assert SERVICES[service]["depends_on"]["kafka"]["condition"] == "service_healthy"


@pytest.mark.parametrize(
    "service", sorted(n for n in SERVICES if "DMP_KAFKA_BOOTSTRAP" in environment(n))
)
def test_bootstrap_is_a_listener_kafka_advertises_to_containers(service: str) -> None:
    advertised = set(listeners(KAFKA_ENV["KAFKA_ADVERTISED_LISTENERS"]).values())
    kafka_names = {"kafka", SERVICES["kafka"].get("hostname", "kafka")}
    for server in environment(service)["DMP_KAFKA_BOOTSTRAP"].split(","):
        assert server in advertised
        assert server.rsplit(":", 1)[0] in kafka_names  # not localhost: that is the container


def test_kafka_host_listener_is_published() -> None:
    advertised = listeners(KAFKA_ENV["KAFKA_ADVERTISED_LISTENERS"]).values()
    host_ports = {int(a.rsplit(":", 1)[1]) for a in advertised if a.startswith("localhost:")}
    assert host_ports
    assert host_ports <= published_ports("kafka")


# --- worker settings -----------------------------------------------------------------------------

_PROBES = ("7", "exactly_once", "probe.example:1234", "999999999")


def changes_settings(name: str) -> bool:
    """Whether ``Settings.from_env`` reads the variable ``name`` at all."""
    baseline = Settings.from_env({})
    for probe in _PROBES:
        try:
            if Settings.from_env({name: probe}) != baseline:
                return True
        except SettingsError:
            return True  # read, and refused this probe
    return False


def test_settings_probe_tells_an_unknown_variable() -> None:
    assert not changes_settings("DMP_NOT_A_SETTING")


@pytest.mark.parametrize(("service", "key"), DMP_VARIABLES)
def test_dmp_variable_is_a_setting(service: str, key: str) -> None:
    assert changes_settings(key), f"{service}: {key} is not read by Settings.from_env"


@pytest.mark.parametrize("service", WORKERS)
def test_worker_settings_keep_the_contract_defaults(service: str) -> None:
    settings, defaults = settings_of(service), Settings()
    assert settings.topic_prefix == defaults.topic_prefix
    assert settings.partitions == defaults.partitions
    assert settings.processing_guarantee == defaults.processing_guarantee
    assert settings.api_token is None


def test_first_worker_uses_the_default_web_port() -> None:
    assert settings_of("worker").web_port == Settings().web_port == 6066


@pytest.mark.parametrize("service", WORKERS)
def test_worker_advertises_its_service_name(service: str) -> None:
    assert settings_of(service).web_host == service


@pytest.mark.parametrize("service", WORKERS)
def test_worker_publishes_its_web_port(service: str) -> None:
    assert settings_of(service).web_port in published_ports(service)


@pytest.mark.parametrize("service", WORKERS)
def test_worker_data_dir_is_a_volume(service: str) -> None:
    targets = {PurePosixPath(target) for _, target in mounts(service)}
    assert PurePosixPath(settings_of(service).data_dir) in targets


def test_workers_do_not_share_ports_or_state() -> None:
    ports = [settings_of(service).web_port for service in WORKERS]
    data = [s for service in WORKERS for s, t in mounts(service) if t == "/data"]
    assert len(set(ports)) == len(WORKERS)
    assert len(set(data)) == len(WORKERS)


# --- files the stack refers to -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "source"), [(name, src) for name in SERVICES for src in bind_sources(name)]
)
def test_bind_mount_exists(service: str, source: str) -> None:
    assert (ROOT / source).exists(), f"{service} mounts missing {source}"


@pytest.mark.parametrize("service", sorted(n for n, s in SERVICES.items() if "build" in s))
def test_build_context_has_the_dockerfile(service: str) -> None:
    build = SERVICES[service]["build"]
    if isinstance(build, str):
        build = {"context": build}
    context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).is_file()


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction, continuation lines joined."""
    lines = DOCKERFILE.replace("\\\n", " ").splitlines()
    return [line.split(None, 1)[1] for line in lines if line.split(None, 1)[:1] == [name]]


COPY_SOURCES = sorted(
    src.rstrip("/")
    for args in dockerfile_instructions("COPY")
    for src in args.split()[:-1]
    if not src.startswith("--")
)


def test_dockerfile_cmd_runs_a_worker() -> None:
    assert json.loads(dockerfile_instructions("CMD")[-1]) == ["dmp-faust", "worker"]


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def test_cli_entry_point_is_declared() -> None:
    assert "dmp-faust" in pyproject()["project"]["scripts"]


def test_dockerfile_base_user_and_port() -> None:
    assert dockerfile_instructions("FROM")[0] == "python:3.11-slim"
    assert dockerfile_instructions("USER")[-1] not in ("root", "0")
    assert str(Settings().web_port) in dockerfile_instructions("EXPOSE")[-1].split()


def test_dockerfile_copies_every_package() -> None:
    packages = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= set(COPY_SOURCES)


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated, pattern = pattern.startswith("!"), pattern.lstrip("!").strip("/")
        names = [pattern, pattern.removeprefix("**/")]
        if any(fnmatch(c, p) for c in candidates for p in names):
            ignored = not negated
    return ignored


@pytest.mark.parametrize("source", COPY_SOURCES)
def test_dockerfile_copies_a_file_in_the_build_context(source: str) -> None:
    assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    files = [source]
    if (ROOT / source).is_dir():
        files += [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")]
    assert not [f for f in files if dockerignored(f)]


def test_dockerignore_drops_local_state() -> None:
    assert all(dockerignored(path) for path in (".git/config", ".venv/bin/python", "var/x"))


# --- Prometheus ------------------------------------------------------------------------------


def scrape_targets(path: str, interval: str) -> set[str]:
    default_interval = PROMETHEUS.get("global", {}).get("scrape_interval", "1m")
    return {
        target
        for job in PROMETHEUS["scrape_configs"]
        if job.get("metrics_path", "/metrics") == path
        and job.get("scrape_interval", default_interval) == interval
        for group in job.get("static_configs", [])
        for target in group["targets"]
    }


@pytest.mark.parametrize("service", WORKERS)
def test_prometheus_scrapes_worker_metrics_every_5s(service: str) -> None:
    assert f"{service}:{settings_of(service).web_port}" in scrape_targets("/metrics", "5s")


def test_prometheus_reads_the_deploy_config() -> None:
    assert host_path("prometheus", "/etc/prometheus/prometheus.yml") == (
        PROMETHEUS_DIR / "prometheus.yml"
    )
    assert 9090 in published_ports("prometheus")


def test_prometheus_sees_the_rule_files_of_its_config() -> None:
    """A relative rule file is read from the config's directory in the container."""
    rule_files = PROMETHEUS.get("rule_files", [])
    assert rule_files
    for rule_file in rule_files:
        in_container = PurePosixPath("/etc/prometheus") / rule_file
        path = host_path("prometheus", str(in_container))
        assert path is not None, f"prometheus does not mount {in_container}"
        assert path == PROMETHEUS_DIR / rule_file and path.is_file()


# --- Grafana -----------------------------------------------------------------------------------


def grafana_file(container_path: str) -> Path:
    path = host_path("grafana", container_path)
    assert path is not None, f"grafana does not mount {container_path}"
    return path


def provisioned(kind: str, key: str) -> list[dict[str, Any]]:
    folder = grafana_file(f"/etc/grafana/provisioning/{kind}")
    docs = [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.y*ml"))]
    return [item for doc in docs for item in doc.get(key, [])]


def dashboards() -> list[dict[str, Any]]:
    folders = [grafana_file(p["options"]["path"]) for p in provisioned("dashboards", "providers")]
    return [json.loads(f.read_text()) for folder in folders for f in sorted(folder.glob("*.json"))]


def test_grafana_lets_anonymous_viewers_in() -> None:
    env = environment("grafana")
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true"
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"
    assert 3000 in published_ports("grafana")


def test_grafana_home_dashboard_is_mounted() -> None:
    home = environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert grafana_file(home).is_file()


def test_grafana_datasource_is_the_prometheus_service() -> None:
    [source] = provisioned("datasources", "datasources")
    assert source["type"] == "prometheus"
    host, port = source["url"].removeprefix("http://").split(":")
    assert host == "prometheus" and host in SERVICES
    assert int(port) in published_ports("prometheus")


def test_dashboard_queries_use_the_provisioned_datasource() -> None:
    [source] = provisioned("datasources", "datasources")
    boards = dashboards()
    assert boards
    refs = [
        item["datasource"]["uid"]
        for board in boards
        for panel in board["panels"]
        for item in [panel, *panel.get("targets", [])]
    ]
    assert refs and set(refs) == {source["uid"]}


def dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for b in dashboards() for p in b["panels"] for t in p.get("targets", [])]
    names = {m for expr in exprs for m in re.findall(r"\bdmp_\w+", expr)}
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_dashboard_uses_only_contract_metrics() -> None:
    assert dashboard_metrics() <= CONTRACT_METRICS


@pytest.mark.parametrize("metric", DASHBOARD_METRICS)
def test_dashboard_shows_metric(metric: str) -> None:
    assert metric in dashboard_metrics()
