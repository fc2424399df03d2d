"""Static checks of the Kubernetes manifests in deploy/k8s.

No cluster runs here. The core objects are validated offline against the Kubernetes API
schemas (kubernetes-validate); the custom resources of the Prometheus Operator and KEDA, for
which it has no schemas, against the fields they require. Then the manifests are held to the
code they deploy: the registered processes, their ports and probes, the variables
infra/settings.py reads, the Secret's keys, the command queues and the alert rules.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from catalog.deploy import metrics_ports
from catalog.plan import shipped
from catalog.rabbitmq import DEFAULT_VHOST, OPERATOR_USER, ORCHESTRATOR_USER
from console.settings import ENV as CONSOLE_ENV
from console.settings import ConsoleSettings
from contracts.topology import Topology, service_user
from infra.settings import COMMON_ENV, FAULT_ENV, MONGO_URL_PREFIX
from orchestrator.settings import ENV as ORCHESTRATOR_ENV
from workers.settings import ENV as WORKER_ENV

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
# Not applied with the rest: applying it again would overwrite the real credentials.
SECRET_TEMPLATE = K8S / "secret.example.yaml"
SECRET = "saga-credentials"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
# The oldest Kubernetes release the manifests are for, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

METRICS_PORTS = metrics_ports(shipped())
PARTICIPANTS = tuple(sorted(shipped().participants))
PROCESSES = (*METRICS_PORTS, "console")
CONSOLE_PORT = ConsoleSettings.model_fields["port"].default
# Which SAGA_* variables each kind of process reads (infra/settings.py).
READS = {"orchestrator": {*COMMON_ENV, *ORCHESTRATOR_ENV, *FAULT_ENV},
         "worker": {*COMMON_ENV, *WORKER_ENV, *FAULT_ENV}, "console": {*COMMON_ENV, *CONSOLE_ENV}}
PROBE_PATHS = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
# Where the code serves the probe paths: the ops endpoint of the orchestrator and the
# workers, and the console's routes.
PROBE_SOURCES = {ROOT / "infra" / "http.py": 'path == "{}"', ROOT / "console" / "app.py": 'Route("{}"'}
CREDENTIAL_NAME = re.compile(r"PASS|SECRET|TOKEN|URL")
URL_PASSWORD = re.compile(r"://[^\s/@:\"']+:([^\s\"']+)@")

# The required fields of the custom resources, from their CRDs (kubernetes-validate has none).
_STRINGS = {"type": "array", "minItems": 1, "items": {"type": "string"}}
_NAMED = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
CUSTOM_SCHEMAS: dict[str, dict[str, Any]] = {
    "monitoring.coreos.com/v1/ServiceMonitor": {
        "required": ["selector", "endpoints"],
        "properties": {"selector": {"type": "object"}, "endpoints": {
            "type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["port"], "properties": {
                    "port": {"type": "string"}, "path": {"type": "string"},
                    "relabelings": {"type": "array", "items": {
                        "type": "object", "required": ["targetLabel"],
                        "properties": {"sourceLabels": _STRINGS}}}}}}}},
    "monitoring.coreos.com/v1/PrometheusRule": {
        "required": ["groups"],
        "properties": {"groups": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "rules"], "properties": {
                "rules": {"type": "array", "items": {
                    "type": "object", "required": ["expr"],
                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}]}}}}}}},
    "keda.sh/v1alpha1/ScaledObject": {
        "required": ["scaleTargetRef", "triggers"],
        "properties": {
            "scaleTargetRef": _NAMED,
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "triggers": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["type", "metadata"], "properties": {
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "authenticationRef": _NAMED}}}}},
    "keda.sh/v1alpha1/TriggerAuthentication": {
        "properties": {"secretTargetRef": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["parameter", "name", "key"]}}}},
}


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _kustomization() -> dict[str, Any]:
    result: dict[str, Any] = _load(KUSTOMIZATION)[0]
    return result


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    """Every object `kubectl apply -k deploy/k8s` applies."""
    return [doc for name in _kustomization()["resources"] for doc in _load(K8S / name)]


@pytest.fixture(scope="module")
def secret() -> dict[str, str]:
    """The template's keys and placeholder values."""
    (template,) = _load(SECRET_TEMPLATE)
    assert (template["kind"], template["metadata"]["name"]) == ("Secret", SECRET)
    data: dict[str, str] = template["stringData"]
    return data


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def _containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for deployment in _of_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment["metadata"]["name"], container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


def _secret_key(container: dict[str, Any], name: str) -> str:
    ref = _env(container)[name]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == SECRET
    key: str = ref["key"]
    return key


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def _api_key(doc: dict[str, Any]) -> str:
    return f"{doc['apiVersion']}/{doc['kind']}"


def _port(process: str) -> int:
    return CONSOLE_PORT if process == "console" else METRICS_PORTS[process]


def test_kustomization_lists_every_manifest() -> None:
    """kustomization.yaml lists exactly the manifests of deploy/k8s (the Secret template
    aside), and does nothing else to them."""
    kustomization = _kustomization()
    assert set(kustomization) == {"apiVersion", "kind", "resources"}
    files = sorted(p.name for p in K8S.iterdir() if p not in (KUSTOMIZATION, SECRET_TEMPLATE))
    assert sorted(kustomization["resources"]) == files
    assert all(name.endswith(".yaml") for name in files), files


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_match_the_kubernetes_schema(
        objects: list[dict[str, Any]], version: str) -> None:
    """Every built-in object, and the Secret template, is valid for this Kubernetes release
    (strict: an unknown or misspelt field is an error)."""
    core = [o for o in objects if _api_key(o) not in CUSTOM_SCHEMAS]
    for doc in [*core, *_load(SECRET_TEMPLATE)]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {e.message}")
    assert {o["kind"] for o in core} == {"Deployment", "Service", "PodDisruptionBudget"}


def test_custom_resources_have_their_required_fields(objects: list[dict[str, Any]]) -> None:
    """ServiceMonitor, PrometheusRule, ScaledObject and TriggerAuthentication carry the
    fields their operators require."""
    custom = [o for o in objects if _api_key(o) in CUSTOM_SCHEMAS]
    assert {_api_key(o) for o in custom} == set(CUSTOM_SCHEMAS)
    for doc in custom:
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, set(doc)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        schema = {"type": "object", **CUSTOM_SCHEMAS[_api_key(doc)]}
        jsonschema.validate(doc["spec"], schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("process", PROCESSES)
def test_every_process_has_a_deployment_service_and_budget(
        objects: list[dict[str, Any]], process: str) -> None:
    """Each process runs as a Deployment, reached through a Service of the same name and
    covered by a PodDisruptionBudget; each selects exactly that Deployment's pods."""
    deployment = _find(objects, "Deployment", f"saga-{process}")
    labels = _pod_labels(deployment)
    assert labels["app.kubernetes.io/component"] == process
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    service = _find(objects, "Service", f"saga-{process}")
    assert service["spec"]["selector"] == labels
    budget = _find(objects, "PodDisruptionBudget", f"saga-{process}")
    assert budget["spec"]["selector"]["matchLabels"] == labels
    others = [d for d in _of_kind(objects, "Deployment") if d is not deployment]
    assert not any(_selects(service["spec"]["selector"], _pod_labels(d)) for d in others)


def test_only_registered_processes_are_deployed(objects: list[dict[str, Any]]) -> None:
    """No Deployment is left for a process the code no longer ships."""
    assert {d["metadata"]["name"] for d in _of_kind(objects, "Deployment")} == {
        f"saga-{p}" for p in PROCESSES}


@pytest.mark.parametrize("process", PROCESSES)
def test_container_runs_the_process_from_the_product_image(
        objects: list[dict[str, Any]], process: str) -> None:
    """Each container runs `python -m ...` as docker-compose.yml does, from the one image
    tagged with pyproject.toml's version."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["version"]
    container = _container(_find(objects, "Deployment", f"saga-{process}"))
    module = [process] if process in ("orchestrator", "console") else ["workers", process]
    assert container["args"] == ["python", "-m", *module]
    assert "command" not in container, "args replace the image's CMD, as compose's command does"
    assert container["image"] == f"saga-orchestrator:{version}"


@pytest.mark.parametrize("process", PROCESSES)
def test_ports_and_probes_match_the_code(objects: list[dict[str, Any]], process: str) -> None:
    """The container listens on the process's port from the code (SAGA_METRICS_PORT, or
    SAGA_CONSOLE_PORT), and probes /healthz (alive) and /readyz (ready) there."""
    container = _container(_find(objects, "Deployment", f"saga-{process}"))
    port = _port(process)
    (declared,) = container["ports"]
    assert declared["containerPort"] == port
    variable = "SAGA_CONSOLE_PORT" if process == "console" else "SAGA_METRICS_PORT"
    assert _env(container)[variable]["value"] == str(port)
    assert {"livenessProbe", "readinessProbe"} <= set(container)
    for kind, path in PROBE_PATHS.items():
        if kind in container:
            probe = container[kind]["httpGet"]
            assert probe["path"] == path, f"{kind} of {process}"
            assert probe["port"] in (declared["name"], port), f"{kind} of {process}"
    service = _find(objects, "Service", f"saga-{process}")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (port, declared["name"])]


def test_the_code_serves_the_probe_paths() -> None:
    """The paths the probes ask for are the ones the ops endpoint and the console serve."""
    for source, pattern in PROBE_SOURCES.items():
        text = source.read_text(encoding="utf-8")
        for path in set(PROBE_PATHS.values()):
            assert pattern.format(path) in text, f"{source.relative_to(ROOT)} serves no {path}"


def test_every_container_is_bounded_and_runs_as_non_root(objects: list[dict[str, Any]]) -> None:
    """Each container has requests and limits, and runs as the image's non-root user, by
    number (a named USER cannot be checked against runAsNonRoot), without privileges."""
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert uid, "the Dockerfile creates no user with a fixed uid"
    for deployment in _of_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(uid[1])
        assert pod.get("automountServiceAccountToken") is False
    for name, container in _containers(objects):
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, f"{name}: {bound}"
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name


@pytest.mark.parametrize("process", PROCESSES)
def test_environment_variables_are_read_by_settings(
        objects: list[dict[str, Any]], process: str) -> None:
    """Every variable a container sets is one infra/settings.py reads for that process, and
    each is named in the manifest (no envFrom)."""
    container = _container(_find(objects, "Deployment", f"saga-{process}"))
    assert "envFrom" not in container
    reads = READS[process if process in ("orchestrator", "console") else "worker"]
    unknown = {n for n in _env(container) if n not in reads and not n.startswith(MONGO_URL_PREFIX)}
    assert not unknown, f"{process} does not read {sorted(unknown)}"


def test_no_credential_is_written_in_a_manifest(objects: list[dict[str, Any]]) -> None:
    """A variable that holds a credential (a password, a token, a URL) comes from the Secret;
    no literal value holds a URL with a password."""
    checked = 0
    for name, container in _containers(objects):
        for var in container.get("env", []):
            if CREDENTIAL_NAME.search(var["name"]):
                assert "value" not in var, f"{name}: {var['name']} is a literal"
                assert var["valueFrom"]["secretKeyRef"]["name"] == SECRET
                checked += 1
            assert not URL_PASSWORD.search(str(var.get("value", ""))), f"{name}: {var['name']}"
    assert checked >= 2 * len(PROCESSES)
    text = "\n".join(p.read_text(encoding="utf-8") for p in K8S.glob("*.yaml") if p != SECRET_TEMPLATE)
    assert "change-me" not in text
    assert not URL_PASSWORD.search(text)


def _secret_refs(objects: list[dict[str, Any]]) -> set[str]:
    keys = {ref["valueFrom"]["secretKeyRef"]["key"] for _, container in _containers(objects)
            for ref in container.get("env", []) if "secretKeyRef" in ref.get("valueFrom", {})}
    for auth in _of_kind(objects, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == SECRET
            keys.add(ref["key"])
    return keys


def test_every_secret_reference_is_in_the_template(
        objects: list[dict[str, Any]], secret: dict[str, str]) -> None:
    """Every key the manifests take from the Secret is in the template, every key of the
    template is used, and every value in it is a placeholder."""
    assert _secret_refs(objects) == set(secret)
    assert all("change-me" in value for value in secret.values()), secret


@pytest.mark.parametrize("process", PROCESSES)
def test_each_process_logs_in_as_its_own_users(
        objects: list[dict[str, Any]], secret: dict[str, str], process: str) -> None:
    """Each process has a broker URL of its own, for its least-privilege user in the
    definitions' vhost, and the database's application user on the replica set; none
    declares the topology."""
    container = _container(_find(objects, "Deployment", f"saga-{process}"))
    amqp = urlsplit(secret[_secret_key(container, "SAGA_AMQP_URL")])
    users = {"orchestrator": ORCHESTRATOR_USER, "console": OPERATOR_USER}
    assert (amqp.scheme, amqp.username) == ("amqp", users.get(process, service_user(process)))
    assert amqp.path == f"/{DEFAULT_VHOST}"
    mongo = urlsplit(secret[_secret_key(container, "SAGA_MONGO_URL")])
    assert {"replicaSet=rs0", "authSource=admin"} <= set(mongo.query.split("&"))
    assert _env(container)["SAGA_DECLARE_TOPOLOGY"]["value"] == "false"


@pytest.mark.parametrize("participant", PARTICIPANTS)
def test_every_participant_scales_on_its_command_queue(
        objects: list[dict[str, Any]], participant: str) -> None:
    """A ScaledObject scales each participant on the depth of its command queue, reading it
    with the participant's own broker URL; KEDA, not the Deployment, sets the replicas."""
    deployment = _find(objects, "Deployment", f"saga-{participant}")
    assert "replicas" not in deployment["spec"], "KEDA sets the replicas"
    scaled = _find(objects, "ScaledObject", f"saga-{participant}")["spec"]
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == Topology().command_queue(participant)
    assert (trigger["metadata"]["protocol"], trigger["metadata"]["mode"]) == ("amqp", "QueueLength")
    auth = _find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    assert ref["key"] == _secret_key(_container(deployment), "SAGA_AMQP_URL")


def test_only_participants_are_scaled(objects: list[dict[str, Any]]) -> None:
    """No ScaledObject for the orchestrator or the console, none left for a removed participant."""
    targets = {o["spec"]["scaleTargetRef"]["name"] for o in _of_kind(objects, "ScaledObject")}
    assert targets == {f"saga-{p}" for p in PARTICIPANTS}


def test_the_service_monitor_scrapes_every_process(objects: list[dict[str, Any]]) -> None:
    """The ServiceMonitor selects the metrics Service of every process that has one, on its
    metrics port, with the `service` label named after the process and a job that the
    target-down alert matches."""
    (monitor,) = _of_kind(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]
    (components,) = selector["matchExpressions"]
    assert (components["key"], components["operator"]) == ("app.kubernetes.io/component", "In")
    assert sorted(components["values"]) == sorted(METRICS_PORTS)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["honorLabels"]) == ("metrics", "/metrics", True)
    assert endpoint["relabelings"] == [{
        "sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_component"],
        "targetLabel": "service"}]
    job = re.search(r'up\{job=~"([^"]+)"\}', RULES.read_text(encoding="utf-8"))
    assert job, "rules.yml has no target-down alert"
    for service in _of_kind(objects, "Service"):
        labels = service["metadata"]["labels"]
        selected = (_selects(selector["matchLabels"], labels)
                    and labels.get(components["key"]) in components["values"])
        assert selected == (labels["app.kubernetes.io/component"] in METRICS_PORTS)
        if selected:
            assert re.fullmatch(job[1], service["metadata"]["name"])
            assert [p["name"] for p in service["spec"]["ports"]] == [endpoint["port"]]


def test_the_prometheus_rule_is_rules_yml(objects: list[dict[str, Any]]) -> None:
    """The PrometheusRule holds exactly the groups of deploy/prometheus/rules.yml."""
    (rule,) = _of_kind(objects, "PrometheusRule")
    expected = _load(RULES)[0]["groups"]
    assert rule["spec"] == {"groups": expected}, (
        "deploy/k8s/prometheusrule.yaml is stale: its spec.groups must be rules.yml's groups")


def test_the_console_is_not_exposed(objects: list[dict[str, Any]]) -> None:
    """Every Service is internal to the cluster (ClusterIP), and nothing routes in from outside."""
    for service in _of_kind(objects, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
    assert not [o for o in objects if o["kind"] in ("Ingress", "Gateway", "HTTPRoute")]
