"""deploy/k8s: the Kubernetes manifests are valid and agree with each other and the code.

No cluster and no network. Every built-in kind is validated, strictly (an unknown
field is an error), against the Kubernetes OpenAPI schemas that the package
kubernetes-validate bundles. The custom resources it has no schema for (the
Prometheus Operator's PodMonitor, Strimzi's Kafka and KafkaNodePool) are checked
field by field. Then the facts that tie the objects together: the headless Service
and the workers' DNS names, the probes and the port, the env variables against
``Settings.from_env``, the Kafka cluster against the workers' settings, the image
against the Dockerfile and docker-compose.yml, the resources against
bench/RESULTS.md, and kustomization.yaml against the directory.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dmp_faust.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"

# The newest Kubernetes whose schemas kubernetes-validate 1.37 bundles, and an older
# one still in wide use (persistentVolumeClaimRetentionPolicy is GA from 1.32).
KUBERNETES_VERSION = "1.37"
OLDEST_KUBERNETES_VERSION = "1.32"
VERSIONS = (OLDEST_KUBERNETES_VERSION, KUBERNETES_VERSION)

# Kinds the bundled schemas do not cover: checked structurally below.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
}

# DMP_REPLICATION_FACTOR (replication factor of every topic and changelog the app
# creates) is being added to dmp_faust/settings.py while these manifests are written;
# the one name allowed before Settings.from_env reads it. Nothing else is.
PENDING_SETTINGS = {"DMP_REPLICATION_FACTOR"}

# tests/integration/support.py gives a worker this long after SIGTERM before SIGKILL.
SIGTERM_WAIT_S = 60

# What the liveness probe must outlast: a survivor took up to 33 s to serve a lost
# worker's keys in `make chaos` (docs/RELIABILITY.md), a restart 7.1 s (bench).
LONGEST_TAKEOVER_S = 33


def _load() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                documents.append((str(path.relative_to(K8S)), document))
    return documents


DOCUMENTS = _load()


def _id(document: dict[str, Any]) -> str:
    return f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"


BUILTIN = [
    pytest.param(document, id=f"{path}:{_id(document)}")
    for path, document in DOCUMENTS
    if (document["apiVersion"], document["kind"]) not in CUSTOM_KINDS
]


def objects(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in DOCUMENTS if document["kind"] == kind]


def one(kind: str) -> dict[str, Any]:
    found = objects(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


STATEFULSET = one("StatefulSet")
POD = STATEFULSET["spec"]["template"]
POD_LABELS: dict[str, str] = POD["metadata"]["labels"]
CONTAINER = POD["spec"]["containers"][0]
ENV: list[dict[str, Any]] = CONTAINER["env"]
ENV_VALUES: dict[str, str] = {e["name"]: e["value"] for e in ENV if "value" in e}
KAFKA = one("Kafka")
NODE_POOL = one("KafkaNodePool")
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def selects_workers(selector: Mapping[str, str]) -> bool:
    """A non-empty label selector that every worker pod matches."""
    return bool(selector) and all(POD_LABELS.get(k) == v for k, v in selector.items())


def container_port(port: int | str) -> dict[str, Any]:
    """The worker container's port that ``port`` (a name or a number) refers to."""
    for candidate in CONTAINER["ports"]:
        if port in (candidate.get("name"), candidate["containerPort"]):
            return dict(candidate)
    raise AssertionError(f"port {port!r} is not a port of container {CONTAINER['name']}")


def mounted_paths() -> set[str]:
    return {mount["mountPath"] for mount in CONTAINER.get("volumeMounts", [])}


# --- the files ---------------------------------------------------------------------------


def test_every_document_is_an_object_with_a_name() -> None:
    assert DOCUMENTS, f"no manifests under {K8S}"
    for path, document in DOCUMENTS:
        assert isinstance(document, dict), path
        assert document.get("apiVersion") and document.get("kind"), path
        assert document.get("metadata", {}).get("name"), f"{path}: {_id(document)} has no name"


def test_the_expected_kinds_are_there() -> None:
    kinds = {document["kind"] for _, document in DOCUMENTS}
    assert kinds >= {
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "PodMonitor",
        "Kafka",
        "KafkaNodePool",
    }


def test_names_are_unique_per_kind() -> None:
    seen = [_id(document) for _, document in DOCUMENTS]
    assert len(seen) == len(set(seen)), seen


def test_kustomization_lists_every_file() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    files = {str(p.relative_to(K8S)) for p in K8S.rglob("*.yaml") if p != KUSTOMIZATION}
    assert set(listed) == files


# --- the schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("document", BUILTIN)
def test_builtin_kind_is_valid_in_strict_mode(document: dict[str, Any], version: str) -> None:
    assert kubernetes_validate.validate(document, version, strict=True) == version


@pytest.mark.parametrize(("api_version", "kind"), sorted(CUSTOM_KINDS))
def test_custom_kinds_have_no_bundled_schema(api_version: str, kind: str) -> None:
    """So they are checked below; once a schema is bundled, validate them with it instead."""
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(
            {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}},
            KUBERNETES_VERSION,
            strict=True,
        )


def test_the_validator_refuses_a_misspelled_field() -> None:
    broken = copy.deepcopy(STATEFULSET)
    spec = broken["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    kubernetes_validate.validate(STATEFULSET, KUBERNETES_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriodSecond"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_wrong_type() -> None:
    broken = copy.deepcopy(STATEFULSET)
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# --- the StatefulSet and its Services ----------------------------------------------------


def test_statefulset_selects_its_own_pods() -> None:
    assert selects_workers(STATEFULSET["spec"]["selector"]["matchLabels"])


def test_statefulset_service_is_headless_and_publishes_unready_pods() -> None:
    services = {s["metadata"]["name"]: s for s in objects("Service")}
    headless = services[STATEFULSET["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    # Peers forward lookups to a worker also while it rebalances (not Ready).
    assert headless["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("service", objects("Service"), ids=_id)
def test_service_selects_the_workers_on_the_web_port(service: dict[str, Any]) -> None:
    assert selects_workers(service["spec"]["selector"])
    for port in service["spec"]["ports"]:
        target = container_port(port.get("targetPort", port["port"]))
        assert target["containerPort"] == int(ENV_VALUES["DMP_WEB_PORT"])


def test_pod_management_policy_is_a_choice_made() -> None:
    assert STATEFULSET["spec"]["podManagementPolicy"] in ("Parallel", "OrderedReady")
    assert STATEFULSET["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") == (
        "RollingUpdate"
    )


def test_replicas_do_not_exceed_the_partitions() -> None:
    assert 1 <= STATEFULSET["spec"]["replicas"] <= int(ENV_VALUES["DMP_PARTITIONS"])


def test_data_dir_is_on_a_volume_claim_template() -> None:
    claims = {t["metadata"]["name"]: t for t in STATEFULSET["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in CONTAINER["volumeMounts"]}
    claim = claims[mounts[ENV_VALUES["DMP_DATA_DIR"]]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    # Not also a pod volume, which would shadow the claim.
    pod_volumes = {v["name"] for v in POD["spec"].get("volumes", [])}
    assert claim["metadata"]["name"] not in pod_volumes


# --- env -----------------------------------------------------------------------------------


class _Reads(Mapping[str, str]):
    """An empty environment that records every name read from it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        self.names.add(name)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_read() -> set[str]:
    """The variables ``Settings.from_env`` reads: its ``DMP_*`` settings."""
    reads = _Reads()
    Settings.from_env(reads)
    return reads.names


def test_settings_probe_sees_the_settings_read() -> None:
    names = settings_read()
    assert {"DMP_WEB_PORT", "DMP_DATA_DIR", "DMP_KAFKA_BOOTSTRAP"} <= names
    assert "DMP_NO_SUCH_SETTING" not in names


def test_every_dmp_variable_is_a_setting() -> None:
    used = {e["name"] for e in ENV if e["name"].startswith("DMP_")}
    assert used, "no DMP_ variable in the StatefulSet"
    unknown = used - settings_read() - PENDING_SETTINGS
    assert not unknown, f"not read by Settings.from_env: {sorted(unknown)}"


def test_env_names_are_unique() -> None:
    names = [e["name"] for e in ENV]
    assert len(names) == len(set(names)), names


def test_settings_accept_the_values() -> None:
    settings = Settings.from_env(ENV_VALUES)  # SettingsError if one is refused
    assert settings.web_port == container_port("http")["containerPort"]
    assert str(settings.data_dir) == ENV_VALUES["DMP_DATA_DIR"]
    assert settings.partitions == int(ENV_VALUES["DMP_PARTITIONS"])


def test_web_host_is_the_pods_name_under_the_headless_service() -> None:
    service = STATEFULSET["spec"]["serviceName"]
    host = "$(POD_NAME)." + service + ".$(POD_NAMESPACE).svc.cluster.local"
    assert ENV_VALUES["DMP_WEB_HOST"] == host
    # $(VAR) is expanded only from variables defined earlier in the list.
    order = [e["name"] for e in ENV]
    for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        variable = next(e for e in ENV if e["name"] == name)
        assert variable["valueFrom"]["fieldRef"]["fieldPath"] == field
        assert order.index(name) < order.index("DMP_WEB_HOST")


def test_replication_factor_is_three() -> None:
    assert ENV_VALUES["DMP_REPLICATION_FACTOR"] == "3"


# --- probes, termination, resources, security ----------------------------------------------


def test_readiness_probe_is_health_on_the_web_port() -> None:
    probe = CONTAINER["readinessProbe"]["httpGet"]
    assert probe["path"] == "/health"
    assert container_port(probe["port"])["containerPort"] == int(ENV_VALUES["DMP_WEB_PORT"])


@pytest.mark.parametrize("name", ["startupProbe", "livenessProbe"])
def test_other_probes_ask_the_web_port(name: str) -> None:
    probe = CONTAINER[name]["httpGet"]
    assert probe["path"] in ("/health", "/metrics")
    assert container_port(probe["port"])["containerPort"] == int(ENV_VALUES["DMP_WEB_PORT"])


def _budget_s(probe: dict[str, Any]) -> int:
    """Seconds of consecutive failures before the probe gives up."""
    return int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))


def test_liveness_is_lenient() -> None:
    liveness, startup = CONTAINER["livenessProbe"], CONTAINER["startupProbe"]
    assert _budget_s(liveness) >= 10 * LONGEST_TAKEOVER_S
    assert _budget_s(startup) >= _budget_s(liveness)
    # A readiness probe that gives up sooner than liveness, or it would be pointless.
    assert _budget_s(CONTAINER["readinessProbe"]) < _budget_s(liveness)


def test_termination_is_graceful() -> None:
    assert POD["spec"]["terminationGracePeriodSeconds"] >= SIGTERM_WAIT_S
    assert "preStop" not in CONTAINER.get("lifecycle", {}), "SIGTERM alone stops the worker"


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", quantity)
    assert match, quantity
    return float(match.group(1)) * units.get(match.group(2) or "", 1 / 2**20)


def _cores(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_resources_cover_the_bench_figures() -> None:
    resources = CONTAINER["resources"]
    results = (ROOT / "bench" / "RESULTS.md").read_text()
    peaks = [int(mib) for mib in re.findall(r"peak RSS[^|]*\|\s*([\d,]+) MiB", results)]
    assert peaks, "no worker peak RSS in bench/RESULTS.md"
    memory_request = _mib(resources["requests"]["memory"])
    assert memory_request >= max(peaks)
    assert _mib(resources["limits"]["memory"]) >= memory_request
    cpu_request = _cores(resources["requests"]["cpu"])
    assert cpu_request >= 1, "one worker keeps about one core busy (bench/RESULTS.md)"
    assert _cores(resources["limits"]["cpu"]) >= cpu_request


def _dockerfile(pattern: str) -> list[str]:
    return re.findall(pattern, DOCKERFILE, flags=re.MULTILINE)


def test_runs_as_the_images_non_root_user() -> None:
    uid = int(_dockerfile(r"useradd\b.*--uid (\d+)")[0])
    pod = POD["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == uid != 0
    assert pod["fsGroup"] != 0  # the claim's volume writable by the user
    container = CONTAINER["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]


def test_a_read_only_root_leaves_every_written_path_on_a_volume() -> None:
    if not CONTAINER["securityContext"].get("readOnlyRootFilesystem"):
        pytest.skip("the root filesystem is writable")
    workdir = _dockerfile(r"^WORKDIR (\S+)")[-1]
    home = _dockerfile(r"--home-dir (\S+)")[0]
    written = {ENV_VALUES["DMP_DATA_DIR"], "/tmp", workdir, home}
    assert written <= mounted_paths()


def test_image_and_command_are_those_of_docker_compose_and_the_dockerfile() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert CONTAINER["image"] == compose["services"]["worker"]["image"]
    cmd = json.loads(_dockerfile(r"^CMD (\[.*\])")[-1])
    assert CONTAINER.get("command", cmd) + CONTAINER.get("args", []) == cmd


# --- the PodDisruptionBudget and the PodMonitor -------------------------------------------


def test_pdb_lets_one_worker_go_at_a_time() -> None:
    pdb = one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert selects_workers(pdb["spec"]["selector"]["matchLabels"])


def test_podmonitor_scrapes_metrics_of_the_workers() -> None:
    monitor = one("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert selects_workers(monitor["spec"]["selector"]["matchLabels"])
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert endpoints
    for endpoint in endpoints:
        assert endpoint["path"] == "/metrics"
        assert container_port(endpoint["port"])["name"] == endpoint["port"]


def test_podmonitor_job_is_the_one_the_alert_rules_select() -> None:
    monitor = one("PodMonitor")
    job = POD_LABELS[monitor["spec"]["jobLabel"]]
    assert job == "dmp-faust"
    for rules in (ROOT / "deploy").rglob("rules.yml"):  # not their unit tests' series
        for selected in re.findall(r'job="([^"]*)"', rules.read_text()):
            assert selected == job, f"{rules.relative_to(ROOT)} selects job {selected!r}"


# --- the Strimzi Kafka cluster -------------------------------------------------------------


def test_kafka_is_a_strimzi_kraft_cluster_with_node_pools() -> None:
    assert KAFKA["apiVersion"] == "kafka.strimzi.io/v1beta2"
    spec = KAFKA["spec"]
    assert "zookeeper" not in spec
    annotations = KAFKA["metadata"].get("annotations", {})
    assert annotations.get("strimzi.io/node-pools") == "enabled"
    assert annotations.get("strimzi.io/kraft") == "enabled"
    for listener in spec["kafka"]["listeners"]:
        assert {"name", "port", "type", "tls"} <= set(listener), listener
        assert re.fullmatch(r"[a-z0-9]{1,11}", listener["name"]), listener["name"]


def test_node_pool_belongs_to_the_kafka_and_runs_three_dual_role_nodes() -> None:
    assert NODE_POOL["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert NODE_POOL["metadata"]["labels"]["strimzi.io/cluster"] == KAFKA["metadata"]["name"]
    spec = NODE_POOL["spec"]
    assert spec["replicas"] == 3
    assert set(spec["roles"]) == {"controller", "broker"}
    storage = spec["storage"]
    assert storage["type"] == "jbod"
    volumes = storage["volumes"]
    assert all(v["type"] == "persistent-claim" and v["size"] for v in volumes)
    assert [v.get("kraftMetadata") for v in volumes].count("shared") == 1


def test_workers_bootstrap_from_the_kafka_plain_listener() -> None:
    assert "DMP_KAFKA_SECURITY_PROTOCOL" not in ENV_VALUES  # PLAINTEXT
    plain = [
        listener
        for listener in KAFKA["spec"]["kafka"]["listeners"]
        if listener["type"] == "internal" and listener["tls"] is False
    ]
    assert plain, "no plain internal listener"
    expected = {f"{KAFKA['metadata']['name']}-kafka-bootstrap:{p['port']}" for p in plain}
    assert ENV_VALUES["DMP_KAFKA_BOOTSTRAP"] in expected


def test_kafka_holds_the_workers_replication_and_partitions() -> None:
    factor = int(ENV_VALUES["DMP_REPLICATION_FACTOR"])
    config = KAFKA["spec"]["kafka"]["config"]
    brokers = NODE_POOL["spec"]["replicas"] if "broker" in NODE_POOL["spec"]["roles"] else 0
    assert brokers >= factor
    assert config["default.replication.factor"] == factor
    assert config["offsets.topic.replication.factor"] == factor
    # One broker may be away (a rolling restart) and writes still go through.
    assert 1 < config["min.insync.replicas"] < factor
    assert config["num.partitions"] == int(ENV_VALUES["DMP_PARTITIONS"])
