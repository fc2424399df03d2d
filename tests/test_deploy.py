"""Static checks of the deployment files: docker-compose.yml, .env.example, the RabbitMQ
definitions, the MongoDB scripts, Prometheus and Grafana.

No container runs here; these tests hold the files to the code they deploy (modules, ports,
environment variables, broker users, metric names), check that no credential is written in
them, and, with promtool, check the Prometheus files.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog.__main__ import generated
from catalog.deploy import RABBITMQ_PROMETHEUS_PORT, metrics_ports
from catalog.plan import shipped
from catalog.rabbitmq import DEFAULT_VHOST, ORCHESTRATOR_USER, definitions, render
from console.settings import ENV as CONSOLE_ENV
from contracts.envelope import MAX_BODY_BYTES, MAX_MESSAGE_BYTES
from contracts.topology import Topology, service_user
from infra.settings import COMMON_ENV, FAULT_ENV, CommonSettings
from orchestrator.settings import ENV as ORCHESTRATOR_ENV

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sagas.json"
METRIC_SOURCES = (ROOT / "orchestrator" / "metrics.py", ROOT / "workers" / "metrics.py",
                  ROOT / "infra" / "adapters" / "mongo.py")
ENV_EXAMPLE = ROOT / ".env.example"
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
RABBITMQ_ENTRYPOINT = ROOT / "deploy" / "rabbitmq" / "entrypoint.sh"
MONGO_ENTRYPOINT = ROOT / "deploy" / "mongo" / "entrypoint.sh"
MONGO_APP_USER = ROOT / "deploy" / "mongo" / "create-app-user.sh"

# Every process the product registers; the compose file is written by hand, checked here.
METRICS_PORTS = metrics_ports(shipped())
APPS = tuple(METRICS_PORTS)
# Every service built from this repository: the registered processes and the console.
BUILT = (*APPS, "console")
SERVICES = ("rabbitmq", "mongo", *BUILT, "prometheus", "alertmanager", "grafana")
# Which SAGA_* variables each kind of process reads (its settings module).
READS = {"orchestrator": {*COMMON_ENV, *ORCHESTRATOR_ENV}, "worker": {*COMMON_ENV, *FAULT_ENV},
         "console": {*COMMON_ENV, *CONSOLE_ENV}}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
# A metric or recording-rule name in a PromQL expression (not `saga-...` label values).
NAME_IN_EXPR = re.compile(r"(?<![A-Za-z0-9_:])saga[_:][A-Za-z0-9_:]*")
# ${VAR:?message}: compose refuses to start while VAR is unset or empty.
REQUIRED = re.compile(r"\$\{([A-Z][A-Z0-9_]*):\?[^}]+\}")
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
# The password of any URL with credentials (scheme://user:password@host).
URL_PASSWORD = re.compile(r"://[^\s/@:\"']+:([^\s\"']+)@")
CREDENTIAL_NAME = re.compile(r"PASS|SECRET|TOKEN|_USER$|USERNAME")
PROMTOOL_MISSING = ("promtool is not on PATH: install Debian's prometheus package "
                    "(apt-get install -y prometheus), which provides it")
# The dashboard's rows, top to bottom; the last one is collapsed.
ROWS = ("Overview", "Participants", "Queues and backlog", "Database", "Dead letters",
        "Injected faults")
# What Grafana puts in place of the dashboard's variables; $definition as "All" is its
# allValue, a regex matching every definition.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "15m", "$definition": ".*"}
DEFINITION_FILTER = 'definition=~"$definition"'
# A metric declaration in the code: its kind, its name, then its label names.
DECLARATION = re.compile(r'(Counter|Gauge|Histogram)\(\s*"(saga_[a-z_]+)",(?:\s*"[^"]*")+,\s*\[([^\]]*)\]')
# A metric name in a query and the matchers that follow it, if any.
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])(saga_[a-z_]+)(\{[^}]*\})?")


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = _load_yaml(COMPOSE)
    assert isinstance(compose, dict), "docker-compose.yml is not a mapping"
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


@pytest.fixture(scope="module")
def scrape_targets() -> dict[str, tuple[str, dict[str, str]]]:
    """Every scrape target as ``host:port`` -> (job name, target labels)."""
    targets: dict[str, tuple[str, dict[str, str]]] = {}
    for job in _load_yaml(PROMETHEUS)["scrape_configs"]:
        for group in job.get("static_configs", []):
            for target in group["targets"]:
                assert target not in targets, f"{target} is scraped twice"
                targets[target] = (job["job_name"], group.get("labels", {}))
    return targets


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(RULES)["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return result


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _code_metric_names() -> set[str]:
    names: set[str] = set()
    for source in METRIC_SOURCES:
        text = source.read_text(encoding="utf-8")
        names.update(re.findall(r"saga_[a-z_]+", text))
        # prometheus_client also exports when each counter or histogram was created.
        for counter in re.findall(r"Counter\(\s*\"(saga_[a-z_]+)_total\"", text):
            names.add(counter + "_created")
        for histogram in re.findall(r"Histogram\(\s*\"(saga_[a-z_]+)\"", text):
            names.update(histogram + suffix for suffix in (*HISTOGRAM_SUFFIXES, "_created"))
    return names


def _labelled_metrics(label: str) -> set[str]:
    """Every metric the code declares with this label (histograms with their series)."""
    names: set[str] = set()
    for source in METRIC_SOURCES:
        for kind, name, labels in DECLARATION.findall(source.read_text(encoding="utf-8")):
            if f'"{label}"' in labels:
                names.add(name)
                if kind == "Histogram":
                    names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries, including those folded into a collapsed row."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            panels.extend(_panels(panel))
        else:
            panels.append(panel)
    return panels


def _rows(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p.get("type") == "row"]


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", []) if t.get("expr")]


def _annotation_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [a["target"]["expr"] for a in dashboard["annotations"]["list"] if "target" in a]


def as_sent(expr: str) -> str:
    """A dashboard query as Grafana sends it, with "All" selected."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable Grafana would not fill in: {expr}"
    return expr


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(PROMTOOL_MISSING)
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_every_expected_service_exists(services: dict[str, dict[str, Any]]) -> None:
    """The compose file defines the broker, the database, all six processes and monitoring."""
    assert set(SERVICES) <= set(services), f"missing: {sorted(set(SERVICES) - set(services))}"


@pytest.mark.parametrize("name", APPS)
def test_app_command_runs_a_module_of_the_repo(services: dict[str, dict[str, Any]], name: str) -> None:
    """Each process runs ``python -m <module>`` of a module that exists and has a main guard."""
    command = _command(services[name])
    assert command[:2] == ["python", "-m"], command
    module = ROOT.joinpath(*command[2].split("."))
    path = module / "__main__.py" if module.is_dir() else module.with_suffix(".py")
    assert path.is_file(), f"{name}: {command[2]} has no {path.relative_to(ROOT)}"
    assert re.search(r"^if __name__ == \"__main__\":", path.read_text(encoding="utf-8"), re.M), (
        f"{name}: {path.relative_to(ROOT)} does nothing when run with -m")
    expected = ["orchestrator"] if name == "orchestrator" else ["workers", name]
    assert command[2:] == expected


@pytest.mark.parametrize("name", APPS)
def test_metrics_port_is_the_default_and_scraped(
        services: dict[str, dict[str, Any]], scrape_targets: dict[str, tuple[str, dict[str, str]]],
        name: str) -> None:
    """Each process's SAGA_METRICS_PORT is its default port, exposed, and scraped by service name."""
    port = METRICS_PORTS[name]
    service = services[name]
    assert _environment(service).get("SAGA_METRICS_PORT") == str(port)
    assert str(port) in [str(p) for p in service.get("expose", [])], f"{name} does not expose {port}"
    target = f"{name}:{port}"
    assert target in scrape_targets, f"{target} is not a Prometheus scrape target"
    job, labels = scrape_targets[target]
    assert job == ("saga-orchestrator" if name == "orchestrator" else "saga-workers")
    assert labels.get("service") == name


def test_scrape_targets_are_compose_services(
        services: dict[str, dict[str, Any]], scrape_targets: dict[str, tuple[str, dict[str, str]]]) -> None:
    """Prometheus scrapes the processes, each at its own default port, and the broker's own
    metrics endpoint."""
    assert set(scrape_targets) == {f"{name}:{port}" for name, port in METRICS_PORTS.items()} | {
        f"rabbitmq:{RABBITMQ_PROMETHEUS_PORT}"}
    assert {target.split(":")[0] for target in scrape_targets} <= set(services)


def test_the_broker_exports_its_metrics_per_queue(services: dict[str, dict[str, Any]]) -> None:
    """rabbitmq_prometheus is enabled in the compose broker and reports every queue."""
    plugins = (ROOT / "deploy" / "rabbitmq" / "enabled_plugins").read_text(encoding="utf-8")
    assert "rabbitmq_prometheus" in plugins
    assert ("./deploy/rabbitmq/enabled_plugins:/etc/rabbitmq/enabled_plugins:ro"
            in services["rabbitmq"]["volumes"])
    assert "prometheus.return_per_object_metrics = true" in RABBITMQ_CONF.read_text(
        encoding="utf-8")


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    """Each image names an exact version (never latest, never a bare major version), and the
    product's own image carries pyproject.toml's version."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["version"]
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        assert re.search(r":v?\d+\.\d+\.\d+(-[a-z]+)?$", image), f"{name}: {image} is not pinned"
        if "build" in service:
            assert image == f"saga-orchestrator:{version}", name


def test_prometheus_and_grafana_keep_their_data(services: dict[str, dict[str, Any]]) -> None:
    assert "prometheus-data:/prometheus" in services["prometheus"]["volumes"]
    assert "grafana-data:/var/lib/grafana" in services["grafana"]["volumes"]


@pytest.mark.parametrize("name", APPS)
def test_app_waits_for_healthy_broker_and_database(
        services: dict[str, dict[str, Any]], name: str) -> None:
    """Each process starts after RabbitMQ and MongoDB are healthy and restarts when it stops."""
    service = services[name]
    depends = service["depends_on"]
    for dependency in ("rabbitmq", "mongo"):
        assert depends[dependency]["condition"] == "service_healthy"
        assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    assert service["restart"] == "unless-stopped"


def test_bind_mounted_host_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    """Every host path mounted into a container exists in the repository."""
    mounts = 0
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                mounts += 1
                assert (ROOT / source).resolve().exists(), f"{name}: {source} does not exist"
    assert mounts >= 4


def test_the_image_holds_every_package_the_product_installs() -> None:
    """The Dockerfile copies each package pyproject.toml installs (a missing one, such as
    catalog, which the orchestrator imports, breaks every container at start)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(encoding="utf-8"),
                            re.M))
    assert packages == copied, f"not copied: {sorted(packages - copied)}"


def test_build_contexts_have_a_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    """Every built service has a Dockerfile in its build context, and the image runs as non-root."""
    built = [s["build"] for s in services.values() if "build" in s]
    assert len(built) == len(BUILT)
    for build in built:
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = ROOT / context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict)
                                       else "Dockerfile")
        assert dockerfile.is_file(), f"no {dockerfile}"
        text = dockerfile.read_text(encoding="utf-8")
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        assert users, "the Dockerfile has no USER"
        assert users[-1] not in ("root", "0"), "the image runs as root"


def test_compose_saga_variables_are_read_by_settings(services: dict[str, dict[str, Any]]) -> None:
    """Every SAGA_* variable in the compose file is one the settings of that process read."""
    known = set().union(*READS.values())
    in_text = set(re.findall(r"\bSAGA_[A-Z0-9_]+", COMPOSE.read_text(encoding="utf-8")))
    assert in_text, "no SAGA_* variable found"
    assert in_text <= known, f"read by no settings: {sorted(in_text - known)}"
    for name in BUILT:
        reads = READS[name if name in ("orchestrator", "console") else "worker"]
        used = {var for var in _environment(services[name]) if var.startswith("SAGA_")}
        assert used <= reads, f"{name} does not read {sorted(used - reads)}"


def _compose_without_comments() -> str:
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def test_definitions_file_matches_the_code() -> None:
    """deploy/rabbitmq/definitions.json is exactly what the generator derives from the topology."""
    assert DEFINITIONS.read_text(encoding="utf-8") == render(definitions(plan=shipped().plan())), (
        "definitions.json is stale: python -m catalog")


def test_partitioned_definitions_declare_the_partition_queues_the_orchestrator_may_read(
        ) -> None:
    """``python -m catalog --partitions P`` adds the P partition queues (one active consumer
    each, each with its dead-letter queue); the orchestrator's user may read them and publish
    to the replies exchange (forwarded cancels and actions), and no participant may read
    them."""
    topology = Topology(CommonSettings().namespace)
    declared = json.loads(generated(shipped(), 3)[DEFINITIONS])
    queues = {q["name"]: q["arguments"] for q in declared["queues"]}
    for p in range(3):
        assert queues[topology.partition_queue(p)]["x-single-active-consumer"] is True
        assert f"{topology.partition_queue(p)}.dlq" in queues
    assert topology.partition_queue(3) not in queues
    grants = {g["user"]: g for g in declared["permissions"]}
    orchestrator = grants[ORCHESTRATOR_USER]
    assert all(re.fullmatch(orchestrator["read"], topology.partition_queue(p))
               for p in (0, 2, 117))
    assert not re.fullmatch(orchestrator["read"], topology.partition_queue(0) + "x")
    assert re.fullmatch(orchestrator["write"], topology.replies_exchange)
    for user, grant in grants.items():
        if user != ORCHESTRATOR_USER:
            assert not re.fullmatch(grant["read"], topology.partition_queue(0)), user


def test_catalog_refuses_a_bad_partition_count() -> None:
    """A partition count that is no number, or out of range, is a one-line error, exit 2."""
    for bad in ("x", "-1", "5000"):
        done = subprocess.run([sys.executable, "-m", "catalog", "--partitions", bad],
                              capture_output=True, text=True, cwd=ROOT, check=False)
        assert done.returncode == 2, done
        assert done.stderr.strip().splitlines()[-1].startswith(
            "python -m catalog: error: argument --partitions"), done.stderr


def test_every_generated_file_matches_the_registry() -> None:
    """The broker definitions, scrape targets, database roles and participant manifests are
    exactly what `python -m catalog` derives from the registered definitions and
    participants: nothing is listed by hand."""
    for path, text in generated(shipped()).items():
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing: python -m catalog"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: python -m catalog")
    manifests = {p.name for p in (ROOT / "deploy" / "manifests").glob("*.json")}
    assert manifests == {f"{name}.json" for name in shipped().participants}


def test_every_compose_variable_is_required_and_in_env_example() -> None:
    """Every ${...} in the compose file refuses to start without a value, and .env.example
    lists exactly those variables, with placeholder values only."""
    text = _compose_without_comments()
    referenced = REFERENCE.findall(text)
    assert referenced, "the compose file takes nothing from .env"
    assert sorted(referenced) == sorted(REQUIRED.findall(text)), "use ${VAR:?message} everywhere"
    example = _env_example()
    assert set(example) == set(referenced), (
        f"missing from .env.example: {sorted(set(referenced) - set(example))}; "
        f"unused: {sorted(set(example) - set(referenced))}")
    assert all(value.startswith("change-me") for value in example.values()), example


def test_compose_holds_no_literal_credential(services: dict[str, dict[str, Any]]) -> None:
    """Every password in a URL and every credential variable is a reference to .env; no
    default account (guest, admin/admin) is left."""
    text = COMPOSE.read_text(encoding="utf-8")
    # With every reference replaced by REF, a URL's password can only be REF.
    passwords = URL_PASSWORD.findall(REQUIRED.sub("REF", text))
    assert passwords, "no URL with credentials found"
    assert set(passwords) == {"REF"}, "a literal password in a URL of the compose file"
    urls = 0
    for name, service in services.items():
        for var, value in _environment(service).items():
            if CREDENTIAL_NAME.search(var):
                assert REQUIRED.fullmatch(value), f"{name}: {var} is not a ${{...}} reference"
            urls += bool(URL_PASSWORD.search(REQUIRED.sub("REF", value)))
    assert urls == len(BUILT) * 2, "expected a broker and a database URL with credentials per process"
    assert "guest" not in text
    assert "MONGO_INITDB_ROOT_PASSWORD" in text, "MongoDB without authentication"
    assert "GF_SECURITY_ADMIN_PASSWORD" in text, "Grafana's default admin/admin"
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


@pytest.mark.parametrize("name", APPS)
def test_app_logs_in_as_its_own_users(services: dict[str, dict[str, Any]], name: str) -> None:
    """Each process uses its own least-privilege broker user in the definitions' vhost, the
    database's application user, and declares nothing."""
    env = _environment(services[name])
    user = ORCHESTRATOR_USER if name == "orchestrator" else service_user(name)
    assert user in {u["name"] for u in json.loads(DEFINITIONS.read_text(encoding="utf-8"))["users"]}
    amqp = re.fullmatch(r"amqp://([^:]+):(\$\{[^}]+\})@rabbitmq:5672/(.+)", env["SAGA_AMQP_URL"])
    assert amqp, env["SAGA_AMQP_URL"]
    assert (amqp[1], amqp[3]) == (user, DEFAULT_VHOST)
    assert REQUIRED.fullmatch(amqp[2])
    mongo = re.fullmatch(r"mongodb://(\$\{[^}]+\}):(\$\{[^}]+\})@mongo:27017/\?(.+)", env["SAGA_MONGO_URL"])
    assert mongo, env["SAGA_MONGO_URL"]
    assert {"replicaSet=rs0", "authSource=admin"} <= set(mongo[3].split("&"))
    assert env["SAGA_DECLARE_TOPOLOGY"] == "false"


def test_the_broker_refuses_messages_over_the_limit() -> None:
    """The shipped config caps message size at MAX_MESSAGE_BYTES, above what a consumer
    reads (a body a little too large still gets a reason), far below RabbitMQ's 128 MiB."""
    found = re.search(r"^max_message_size\s*=\s*(\d+)$",
                      RABBITMQ_CONF.read_text(encoding="utf-8"), re.M)
    assert found, "rabbitmq.conf sets no max_message_size"
    assert int(found[1]) == MAX_MESSAGE_BYTES
    assert MAX_BODY_BYTES < MAX_MESSAGE_BYTES <= 2**20


def test_every_queue_has_a_length_limit_that_pushes_back() -> None:
    """Each queue is caught by exactly one policy; a full queue refuses publishes (its own
    x-overflow argument, or the policy's for dead-letter queues) instead of dropping."""
    document = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    policies = document["policies"]
    for queue in document["queues"]:
        matching = [p for p in policies if re.fullmatch(p["pattern"], queue["name"])]
        assert len(matching) == 1, queue["name"]
        limit = matching[0]["definition"]
        assert limit["max-length"] > 0
        assert limit["max-length-bytes"] > 0
        overflow = queue["arguments"].get("x-overflow") or limit.get("overflow")
        assert overflow == "reject-publish", queue["name"]


def test_rabbitmq_loads_the_definitions(services: dict[str, dict[str, Any]]) -> None:
    """RabbitMQ's config loads definitions.json from the path compose mounts it at, and the
    broker starts through the entry point that sets the passwords."""
    rabbitmq = services["rabbitmq"]
    loaded = re.search(r"^load_definitions\s*=\s*(\S+)$", RABBITMQ_CONF.read_text(encoding="utf-8"), re.M)
    assert loaded, "rabbitmq.conf does not load the definitions"
    volumes = rabbitmq["volumes"]
    assert f"./deploy/rabbitmq/definitions.json:{loaded[1]}:ro" in volumes
    assert "./deploy/rabbitmq/rabbitmq.conf:/etc/rabbitmq/conf.d/20-saga.conf:ro" in volumes
    assert "./deploy/rabbitmq/entrypoint.sh:/saga/entrypoint.sh:ro" in volumes
    assert rabbitmq["entrypoint"] == ["sh", "/saga/entrypoint.sh"]
    assert "/tmp/saga-users-ready" in " ".join(rabbitmq["healthcheck"]["test"])
    assert "/tmp/saga-users-ready" in RABBITMQ_ENTRYPOINT.read_text(encoding="utf-8")


def test_rabbitmq_entrypoint_sets_every_password(services: dict[str, dict[str, Any]]) -> None:
    """Every user of the definitions gets its password from a variable the broker receives,
    and the administrator is created from the environment too."""
    script = RABBITMQ_ENTRYPOINT.read_text(encoding="utf-8")
    env = _environment(services["rabbitmq"])
    users = {u["name"] for u in json.loads(DEFINITIONS.read_text(encoding="utf-8"))["users"]}
    assert 'RABBITMQ_$(echo "${user#saga-}"' in script  # the loop over the definitions' users
    for user in users:
        var = f"RABBITMQ_{user.removeprefix('saga-').upper().replace('-', '_')}_PASSWORD"
        assert REQUIRED.fullmatch(env.get(var, "")), f"{user}: {var} is not passed to the broker"
    for var in re.findall(r'"\$(RABBITMQ_ADMIN_\w+)"', script):
        assert REQUIRED.fullmatch(env[var]), var


def test_mongo_requires_authentication(services: dict[str, dict[str, Any]]) -> None:
    """MongoDB gets a root user, a replica-set key generated at start (never committed), and
    an application user limited to the system's databases."""
    mongo = services["mongo"]
    env = _environment(mongo)
    for var in ("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD", "MONGO_APP_USER",
                "MONGO_APP_PASSWORD"):
        assert REQUIRED.fullmatch(env[var]), var
    assert mongo["entrypoint"] == ["sh", "/saga/entrypoint.sh"]
    assert "./deploy/mongo/entrypoint.sh:/saga/entrypoint.sh:ro" in mongo["volumes"]
    entrypoint = MONGO_ENTRYPOINT.read_text(encoding="utf-8")
    assert re.search(r"mongod --replSet rs0 .*--keyFile", entrypoint)
    assert "/dev/urandom" in entrypoint
    assert not [p for p in (ROOT / "deploy").rglob("*") if p.suffix == ".key" or "keyfile" in p.name]
    assert any(v.endswith(":/docker-entrypoint-initdb.d/10-saga-app-user.sh:ro") for v in mongo["volumes"])
    script = MONGO_APP_USER.read_text(encoding="utf-8")
    granted = set(re.findall(r'"(saga_[a-z]+)"', script))
    assert granted == {CommonSettings().database(owner) for owner in METRICS_PORTS}
    assert "process.env.MONGO_APP_PASSWORD" in script


def test_rule_expressions_use_known_metrics(rules: list[dict[str, Any]]) -> None:
    """Every metric in rules.yml is defined in the code or recorded by rules.yml itself."""
    recorded = {rule["record"] for rule in rules if "record" in rule}
    known = _code_metric_names() | recorded
    for rule in rules:
        used = set(NAME_IN_EXPR.findall(rule["expr"]))
        assert used <= known, f"{rule.get('record') or rule.get('alert')}: unknown {sorted(used - known)}"
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert {"SagaNeedsAttention", "SagaDeadLetterQueueGrowing", "SagaTargetDown", "SagaOverdue",
            "SagaNoProgress", "SagaOutboxBacklogGrowing", "SagaOutboxFailures"} <= alerts


def test_dashboard_parses_and_panels_query_prometheus(dashboard: dict[str, Any]) -> None:
    """The dashboard is valid JSON, and every panel queries the `prometheus` datasource."""
    assert dashboard["uid"] == "saga-status"
    assert dashboard["title"] == "Saga status"
    assert dashboard["schemaVersion"] == 39
    panels = _panels(dashboard)
    assert panels
    ids = [p["id"] for p in panels + _rows(dashboard)]
    assert len(set(ids)) == len(ids), "panel ids are not unique"
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        exprs = [t.get("expr") for t in panel.get("targets", [])]
        assert exprs, f"{panel['title']}: no query"
        assert all(exprs), f"{panel['title']}: an empty query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == "prometheus"


def test_dashboard_expressions_use_known_metrics(
        dashboard: dict[str, Any], rules: list[dict[str, Any]]) -> None:
    """Every metric in the dashboard's queries and annotations is defined in the code or
    recorded by rules.yml."""
    known = _code_metric_names() | {rule["record"] for rule in rules if "record" in rule}
    used: set[str] = set()
    for expr in _dashboard_exprs(dashboard) + _annotation_exprs(dashboard):
        used.update(NAME_IN_EXPR.findall(expr))
    assert used, "the dashboard queries no saga metric"
    assert used <= known, f"unknown metrics: {sorted(used - known)}"


def test_dashboard_rows_in_order(dashboard: dict[str, Any]) -> None:
    """The dashboard opens on the overview, then one row per concern; injected faults sit in
    a collapsed row at the bottom, which holds its own panels (Grafana's schema)."""
    rows = _rows(dashboard)
    assert [r["title"] for r in rows] == list(ROWS)
    assert dashboard["panels"][0] is rows[0], "a panel above the Overview row"
    *open_rows, faults = rows
    assert not any(r["collapsed"] or r["panels"] for r in open_rows)
    assert faults["collapsed"] is True
    assert {p["title"] for p in faults["panels"]} == {"Injected faults"}
    assert all(p["type"] != "row" for p in faults["panels"])
    assert "saga_worker_injected_faults_total" not in json.dumps(
        [p for p in dashboard["panels"] if p is not faults])


def test_dashboard_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    """Each panel sits below its row, within the 24-column grid, and no two panels overlap
    (a collapsed row's panels are laid out as they will be once it is expanded)."""
    placed: list[tuple[str, dict[str, int]]] = []
    row_y = -1
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert 0 <= box["x"] < box["x"] + box["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert box["y"] > row_y, f"{panel['title']}: rows out of order"
            row_y = box["y"]
            placed += [(p["title"], p["gridPos"]) for p in panel["panels"]]
            assert all(p["gridPos"]["y"] > row_y for p in panel["panels"]), panel["title"]
        else:
            assert box["y"] > row_y, f"{panel['title']} is above its row"
        placed.append((panel["title"], box))
    for i, (title, a) in enumerate(placed):
        for other, b in placed[i + 1:]:
            apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                     or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
            assert apart, f"{title!r} overlaps {other!r}"


def test_dashboard_definition_variable_filters_every_definition_metric(
        dashboard: dict[str, Any]) -> None:
    """A `definition` variable lists the definitions that started sagas (several, or All as a
    regex), and every query of a metric with a definition label is filtered by it."""
    variables = dashboard["templating"]["list"]
    assert [v["name"] for v in variables] == ["definition"]
    variable = variables[0]
    assert variable["type"] == "query"
    assert variable["datasource"] == {"type": "prometheus", "uid": "prometheus"}
    assert variable["query"] == "label_values(saga_started_total, definition)"
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    assert variable["allValue"] == GRAFANA_VARIABLES["$definition"]
    labelled = _labelled_metrics("definition")
    assert {"saga_started_total", "saga_duration_seconds_bucket"} <= labelled
    filtered = 0
    for expr in _dashboard_exprs(dashboard):
        for name, matchers in SELECTOR.findall(expr):
            if name in labelled:
                assert DEFINITION_FILTER in matchers, f"{name} not filtered by $definition: {expr}"
                filtered += 1
    assert filtered, "no query of a metric with a definition label found"


def test_dashboard_annotates_restarts(dashboard: dict[str, Any]) -> None:
    """Restarts and unreachable targets are marked on every panel. The processes' registries
    carry no process collector (no process_start_time_seconds), so a restart shows as a new
    creation time of a counter each process makes at start."""
    annotations = {a["name"]: a for a in dashboard["annotations"]["list"]}
    assert set(annotations) == {"Restarts", "Targets down"}
    for annotation in annotations.values():
        assert annotation["enable"] is True
        assert annotation["datasource"] == {"type": "prometheus", "uid": "prometheus"}
    restarts = annotations["Restarts"]["target"]["expr"]
    assert "changes(saga_version_conflicts_created[" in restarts  # the orchestrator
    assert "changes(saga_worker_version_conflicts_created[" in restarts  # every worker


def test_grafana_provisioning_matches_compose(services: dict[str, dict[str, Any]]) -> None:
    """The provisioned datasource and dashboard folder are the ones the dashboard and compose use."""
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    datasources = _load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert [(d["name"], d["uid"], d["url"]) for d in datasources] == [
        ("Prometheus", "prometheus", "http://prometheus:9090")]
    providers = _load_yaml(provisioning / "dashboards" / "sagas.yml")["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in services["grafana"]["volumes"]


def test_promtool_accepts_rules_and_config() -> None:
    """promtool accepts rules.yml and prometheus.yml (which loads rules.yml by relative path)."""
    for args in (("check", "rules", str(RULES)), ("check", "config", str(PROMETHEUS))):
        result = _promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args[:2])}:\n{result.stdout}{result.stderr}"


def test_promtool_accepts_dashboard_queries(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Every dashboard query and annotation is valid PromQL once Grafana has filled in its
    variables (checked by promtool as recording rules)."""
    exprs = [as_sent(e) for e in _dashboard_exprs(dashboard) + _annotation_exprs(dashboard)]
    group = {"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}:check", "expr": expr}
                                           for i, expr in enumerate(exprs)]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}), encoding="utf-8")
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


# Alert cases, run by `promtool test rules`: each alert fires when it should and stays
# quiet in the ordinary case. Series values use promtool's expanding notation; expected
# alerts list their rendered annotations too (promtool compares them exactly).
_NO_PROGRESS = {"summary": "3 saga(s) in flight and none finished in 10 minutes"}
_OUTBOX = {"summary": "Outbox publishes are failing and the relay is not catching up"}
ALERT_TESTS: list[dict[str, Any]] = [
    {  # a compensation fails for good once; nothing else is wrong
        "interval": "1m",
        "input_series": [
            {"series": 'saga_attention_events_total{definition="order",step="reserve_stock",'
                       'operation="compensate"}', "values": "0 0 1x40"},
            {"series": "saga_needs_attention", "values": "0 0 1x40"},
            {"series": 'up{job="saga-workers",service="payment",instance="payment:9403"}',
             "values": "1x3 0x4"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "SagaNeedsAttention", "exp_alerts": []},
            {"eval_time": "3m", "alertname": "SagaNeedsAttention", "exp_alerts": [{
                "exp_labels": {"severity": "page", "definition": "order",
                               "step": "reserve_stock", "operation": "compensate"},
                "exp_annotations": {
                    "summary": "order: reserve_stock compensate failed for good",
                    "description": "A confirmation or a compensation failed permanently; its "
                                   "saga waits in needs_attention for an operator (1 in all)."}}]},
            # Once no new incident came for 15 minutes, it clears, though the saga still waits.
            {"eval_time": "20m", "alertname": "SagaNeedsAttention", "exp_alerts": []},
            {"eval_time": "4m", "alertname": "SagaTargetDown", "exp_alerts": []},
            {"eval_time": "6m", "alertname": "SagaTargetDown", "exp_alerts": [{"exp_labels": {
                "severity": "page", "job": "saga-workers", "service": "payment",
                "instance": "payment:9403"},
                "exp_annotations": {"summary": "payment (payment:9403) cannot be scraped"}}]},
        ],
    },
    {  # sagas in flight and none ever finished (no saga_finished_total series at all)
        "interval": "1m",
        "input_series": [
            {"series": 'saga_inflight{status="running"}', "values": "3x30"},
            {"series": 'saga_inflight{status="compensating"}', "values": "0x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "SagaNoProgress", "exp_alerts": [{
                "exp_labels": {"severity": "page"}, "exp_annotations": _NO_PROGRESS}]},
        ],
    },
    {  # sagas in flight and finishing: not stuck; failures relayed: no outbox alert
        "interval": "1m",
        "input_series": [
            {"series": 'saga_inflight{status="running"}', "values": "3x30"},
            {"series": 'saga_finished_total{definition="order",status="completed",reason=""}',
             "values": "0+1x30"},
            {"series": "saga_outbox_publish_failures_total", "values": "0+2x30"},
            {"series": "saga_outbox_relayed_total", "values": "0+2x30"},
            {"series": 'saga_dead_letter_queue_messages{queue="payment.commands.dlq"}',
             "values": "0x10 1x20"},
            {"series": 'saga_dead_letter_queue_messages{queue="order.commands.dlq"}',
             "values": "5x30"},
            {"series": "saga_overdue", "values": "0x30"},
            # A backlog that comes and goes (ordinary publishing) is not an alert.
            {"series": "saga_outbox_backlog_messages", "values": " ".join(["0 3"] * 13)},
            {"series": "saga_outbox_oldest_age_seconds", "values": " ".join(["0 1"] * 13)},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "SagaNoProgress", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "SagaOutboxFailures", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "SagaOverdue", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "SagaOutboxBacklogGrowing", "exp_alerts": []},
            {"eval_time": "15m", "alertname": "SagaDeadLetterQueueGrowing", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "queue": "payment.commands.dlq"},
                "exp_annotations": {
                    "summary": "Dead-letter queue payment.commands.dlq is growing",
                    "description": "1 more message(s) than 10 minutes ago. Read them with "
                                   "`sagactl audit`; their headers say why they were dead-lettered."},
            }]},
            {"eval_time": "25m", "alertname": "SagaDeadLetterQueueGrowing", "exp_alerts": []},
        ],
    },
    {  # a deploy dropped a definition version that sagas still use
        "interval": "1m",
        "input_series": [
            {"series": 'saga_quarantined{reason="unknown_definition"}', "values": "0 0 2x5"},
            {"series": 'saga_quarantined{reason="undecodable"}', "values": "0x7"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "SagaQuarantined", "exp_alerts": []},
            {"eval_time": "3m", "alertname": "SagaQuarantined", "exp_alerts": [{
                "exp_labels": {"severity": "page", "reason": "unknown_definition"},
                "exp_annotations": {
                    "summary": "2 saga(s) quarantined: unknown_definition",
                    "description": "A saga's document cannot be decoded (its definition "
                                   "version is no longer registered, or its data no longer "
                                   "fits the model), so it is set aside. `sagactl list --state "
                                   "quarantined` names them."}}]},
        ],
    },
    {  # the notification user answers a payment command; a deployment left unchecked
        "interval": "1m",
        "input_series": [
            {"series": 'saga_replies_refused_total{service="payment"}', "values": "0 0 1 1x10"},
            {"series": 'saga_replies_refused_total{service="order"}', "values": "0x12"},
            {"series": "saga_reply_senders_unchecked", "values": "0 0 1x5"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "SagaReplyRefused", "exp_alerts": []},
            {"eval_time": "3m", "alertname": "SagaReplyRefused", "exp_alerts": [{
                "exp_labels": {"severity": "page", "service": "payment"},
                "exp_annotations": {
                    "summary": "Replies to payment commands refused",
                    "description": "A reply came from a broker user that may not answer this "
                                   "service's commands (SAGA_REPLY_USERS), or named another "
                                   "step than its command. The copies are in "
                                   "orchestrator.replies.dlq, with the reason."}}]},
            {"eval_time": "10m", "alertname": "SagaReplyRefused", "exp_alerts": []},
            {"eval_time": "1m", "alertname": "SagaReplySendersUnchecked", "exp_alerts": []},
            {"eval_time": "3m", "alertname": "SagaReplySendersUnchecked", "exp_alerts": [{
                "exp_labels": {"severity": "warning"},
                "exp_annotations": {
                    "summary": "Any broker user may answer any command "
                               "(SAGA_REPLY_USERS=any)"}}]},
        ],
    },
    {  # a compensation keeps retrying past the saga deadline
        "interval": "1m",
        "input_series": [
            {"series": "saga_overdue", "values": "0 0 1x20"},
            {"series": "saga_oldest_unfinished_age_seconds", "values": "60+60x22"},
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "SagaOverdue", "exp_alerts": []},
            {"eval_time": "10m", "alertname": "SagaOverdue", "exp_alerts": [{
                "exp_labels": {"severity": "page"},
                "exp_annotations": {
                    "summary": "1 saga(s) unfinished past their deadline",
                    "description": "The oldest unfinished saga is 11m 0s old. `sagactl list "
                                   "--state running` (or compensating, committed) names them."}}]},
        ],
    },
    {  # the broker refuses publishes: the outbox backlog grows and ages
        "interval": "1m",
        "input_series": [
            {"series": "saga_outbox_backlog_messages", "values": "0 0 0+5x30"},
            {"series": "saga_outbox_oldest_age_seconds", "values": "0 0 0+60x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "SagaOutboxBacklogGrowing", "exp_alerts": []},
            {"eval_time": "25m", "alertname": "SagaOutboxBacklogGrowing", "exp_alerts": [{
                "exp_labels": {"severity": "page"},
                "exp_annotations": {"summary": "The outbox backlog keeps growing (115 messages)"}}]},
        ],
    },
    {  # a participant times out: 4 of 10 sagas fail with TIMEOUT; business refusals do not count
        "interval": "1m",
        "input_series": [
            {"series": 'saga_finished_total{definition="order",status="failed",reason="TIMEOUT"}',
             "values": "0+0.4x30"},
            {"series": 'saga_finished_total{definition="order",status="completed",reason=""}',
             "values": "0+0.6x30"},
            {"series": 'saga_finished_total{definition="transfer",status="failed",'
                       'reason="INSUFFICIENT_FUNDS"}', "values": "0+5x30"},
            {"series": "saga_store_gauges_updated_timestamp_seconds", "values": "0+60x5 240x25"},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "SagaTechnicalFailures", "exp_alerts": [{
                "exp_labels": {"severity": "page", "definition": "order"},
                "exp_annotations": {"summary": "order: more than 10 % of sagas fail with "
                                               "SERVICE_ERROR or TIMEOUT"}}]},
            {"eval_time": "4m", "alertname": "SagaStoreGaugesStale", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "SagaStoreGaugesStale", "exp_alerts": [{
                "exp_labels": {"severity": "page"},
                "exp_annotations": {"summary": "The saga store gauges are 8m 0s old"}}]},
        ],
    },
    {  # publishes fail and the relay does not keep up
        "interval": "1m",
        "input_series": [
            {"series": "saga_outbox_publish_failures_total", "values": "0+2x30"},
            {"series": "saga_outbox_relayed_total", "values": "0x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "SagaOutboxFailures", "exp_alerts": [{
                "exp_labels": {"severity": "warning"}, "exp_annotations": _OUTBOX}]},
        ],
    },
    {  # transfers in opposite directions: 2 of every 10 started end in a deadlock
        "interval": "1m",
        "input_series": [
            {"series": 'saga_started_total{definition="transfer"}', "values": "0+10x30"},
            {"series": 'saga_deadlocks_total{definition="transfer"}', "values": "0x4 0+2x25"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "SagaDeadlocks", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "SagaDeadlocks", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "definition": "transfer"},
                "exp_annotations": {
                    "summary": "transfer: more than 5 % of sagas aborted by deadlocks",
                    "description": "Sagas of transfer wait for each other's locks in cycles, "
                                   "and the youngest of each cycle fails with DEADLOCK."}}]},
        ],
    },
]


def test_every_alert_has_a_firing_case(rules: list[dict[str, Any]]) -> None:
    """No alert goes untested: each one is expected to fire in some case above."""
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    cases: list[dict[str, Any]] = [case for test in ALERT_TESTS
                                   for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    assert alerts == fired


def test_every_alert_links_to_its_runbook(rules: list[dict[str, Any]]) -> None:
    """Each alert's runbook annotation names a section of docs/runbooks.md."""
    headings = {line.removeprefix("## ").strip().lower()
                for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
                if line.startswith("## ")}
    for rule in rules:
        if "alert" in rule:
            assert rule["annotations"]["runbook"] == runbook(rule["alert"])
            assert rule["alert"].lower() in headings, f"no runbook section for {rule['alert']}"


def runbook(alert: str) -> str:
    """Where an alert's runbook is: the section of docs/runbooks.md named after it."""
    return f"docs/runbooks.md#{alert.lower()}"


def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """The alerts fire on their failure cases and stay quiet in ordinary operation (promtool test)."""
    tests = copy.deepcopy(ALERT_TESTS)
    for case in (c for test in tests for c in test["alert_rule_test"]):
        for alert in case["exp_alerts"]:  # promtool compares every annotation
            alert["exp_annotations"]["runbook"] = runbook(case["alertname"])
    path = tmp_path / "alert_tests.yml"
    path.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m",
                                    "tests": tests}), encoding="utf-8")
    result = _promtool("test", "rules", str(path))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


def test_alerts_reach_the_compose_alertmanager(services: dict[str, dict[str, Any]]) -> None:
    """Prometheus sends alerts to the alertmanager service, whose routes all end in a
    defined receiver (there is no amtool on the build machines to check more)."""
    prometheus = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    targets = [t for am in prometheus["alerting"]["alertmanagers"]
               for config in am["static_configs"] for t in config["targets"]]
    assert targets == ["alertmanager:9093"]
    assert "alertmanager" in services
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert all(route.get("receiver", config["route"]["receiver"]) in receivers
               for route in routes)
