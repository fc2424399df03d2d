"""Settings, read once from the environment into frozen objects and passed down: what
every process shares, and the helpers each process's own settings are read with
(orchestrator.settings, workers.settings, console.settings).

Credentials live in the URLs and are SecretStr: they never appear in a repr or a log.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from contracts.envelope import describe
from contracts.errors import SagaSystemError
from contracts.topology import MAX_PARTITIONS

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MONGO_URL = "mongodb://127.0.0.1:27017/?directConnection=true"

MONGO_URL_PREFIX = "SAGA_MONGO_URL_"


class SettingsError(SagaSystemError, ValueError):
    """The environment holds a bad value; the message says which variable and why."""


class Frozen(BaseModel):
    """Immutable settings; unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CommonSettings(Frozen):
    """What every process needs: where the broker and the database are."""

    amqp_url: SecretStr = SecretStr(DEFAULT_AMQP_URL)
    mongo_url: SecretStr = SecretStr(DEFAULT_MONGO_URL)
    # Each owner (the orchestrator, each service) may have a database server of its own.
    mongo_urls: dict[str, SecretStr] = Field(default_factory=dict)
    mongo_db_prefix: str = Field(default="saga", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    namespace: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,40}$")
    store: Literal["mongo", "memory"] = "mongo"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    prefetch: int = Field(default=64, ge=1, le=10_000)
    # Off where the topology is loaded from deploy/rabbitmq/definitions.json and the
    # process's broker user may not configure anything (least privilege).
    declare_topology: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # uvloop passes the chaos runs, but the product measures no faster on it
    # (docs/performance.md): asyncio, the standard loop, stays the default.
    event_loop: Literal["uvloop", "asyncio"] = "asyncio"
    # What is registered besides the entry points (orchestrator/registry.py,
    # workers/catalog.py): modules of saga definitions, participants as
    # ``package.module:attribute``, and manifest files (or folders of them) of participants
    # written in other languages.
    saga_definitions: tuple[str, ...] = ()
    saga_participants: tuple[str, ...] = ()
    saga_manifests: tuple[str, ...] = ()

    def database(self, owner: str) -> str:
        """Each process owns one database: ``<prefix>_<owner>``."""
        return f"{self.mongo_db_prefix}_{owner}"

    def mongo_url_for(self, owner: str) -> str:
        """``SAGA_MONGO_URL_<OWNER>`` if set, else ``SAGA_MONGO_URL``."""
        return self.mongo_urls.get(owner, self.mongo_url).get_secret_value()


CrashPoint = Literal["after_commit", "after_publish"]


class FaultSettings(Frozen):
    """Injected faults for demos, tests and chaos runs; all off by default.

    Publishing faults (duplicate, reorder) apply to every process; the others to workers.
    """

    transient_rate: float = Field(default=0.0, ge=0, le=1)
    reject_rate: float = Field(default=0.0, ge=0, le=1)
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    # Now and then a reply much later than usual: past the step timeout, a late reply.
    slow_rate: float = Field(default=0.0, ge=0, le=1)
    slow_ms: int = Field(default=0, ge=0, le=600_000)
    duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    # Each publish waits up to this long first, so concurrent messages overtake each other.
    reorder_ms: int = Field(default=0, ge=0, le=60_000)
    compensation_failure_rate: float = Field(default=0.0, ge=0, le=1)
    # SIGKILL of the worker itself right after its commit or right after its reply.
    crash_rate: float = Field(default=0.0, ge=0, le=1)
    crash_points: tuple[CrashPoint, ...] = ("after_commit", "after_publish")
    seed: int | None = None


COMMON_ENV = {
    "SAGA_AMQP_URL": "amqp_url", "SAGA_MONGO_URL": "mongo_url", "SAGA_MONGO_DB": "mongo_db_prefix",
    "SAGA_NAMESPACE": "namespace", "SAGA_STORE": "store", "SAGA_METRICS_PORT": "metrics_port",
    "SAGA_METRICS_HOST": "metrics_host", "SAGA_PREFETCH": "prefetch", "SAGA_LOG_LEVEL": "log_level",
    "SAGA_DECLARE_TOPOLOGY": "declare_topology", "SAGA_EVENT_LOOP": "event_loop",
    "SAGA_DEFINITIONS": "saga_definitions", "SAGA_PARTICIPANTS": "saga_participants",
    "SAGA_MANIFESTS": "saga_manifests",
}
LIST_FIELDS = ("saga_definitions", "saga_participants", "saga_manifests")
FAULT_ENV = {
    "SAGA_FAULT_TRANSIENT": "transient_rate", "SAGA_FAULT_REJECT": "reject_rate",
    "SAGA_FAULT_LATENCY_MS": "latency_ms", "SAGA_FAULT_SLOW": "slow_rate",
    "SAGA_FAULT_SLOW_MS": "slow_ms", "SAGA_FAULT_DUPLICATE": "duplicate_rate",
    "SAGA_FAULT_REORDER_MS": "reorder_ms",
    "SAGA_FAULT_COMPENSATION_FAIL": "compensation_failure_rate",
    "SAGA_FAULT_CRASH": "crash_rate", "SAGA_FAULT_CRASH_POINTS": "crash_points",
    "SAGA_FAULT_SEED": "seed",
}


def faults_from_env(env: Mapping[str, str]) -> FaultSettings:
    values: dict[str, object] = dict(pick(env, FAULT_ENV))
    if "crash_points" in values:
        values["crash_points"] = tuple(p.strip() for p in str(values["crash_points"]).split(","))
    return build(FaultSettings, FAULT_ENV, values)


def pick(env: Mapping[str, str], names: Mapping[str, str]) -> dict[str, str]:
    return {field: env[var] for var, field in names.items() if env.get(var, "") != ""}


def build[S: Frozen](model: type[S], env_names: Mapping[str, str], values: dict[str, object]) -> S:
    try:
        return model.model_validate(values)
    except ValidationError as e:
        fields = {v: k for k, v in env_names.items()}
        first = e.errors(include_url=False, include_input=False)[0]
        name = fields.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else "?"
        raise SettingsError(f"{name}: {first['msg']} ({describe(e)})") from e


def common_from_env(env: Mapping[str, str], process: str,
                    metrics_port: int | None = None) -> CommonSettings:
    """Common settings; the metrics port defaults to this process's own port."""
    values: dict[str, object] = {"metrics_port": metrics_port or 0}
    values.update(pick(env, COMMON_ENV))
    for name in LIST_FIELDS:
        if name in values:
            values[name] = tuple(p.strip() for p in str(values[name]).split(",") if p.strip())
    # SAGA_MONGO_URL_<OWNER>: a database server of its own for one owner.
    urls = {var: var.removeprefix(MONGO_URL_PREFIX).lower() for var in env
            if var.startswith(MONGO_URL_PREFIX)}
    values["mongo_urls"] = pick(env, urls)
    return build(CommonSettings, {**COMMON_ENV, **urls}, values)


# Query options whose values are safe to print; every other option's value is masked, since
# drivers accept secrets there (authMechanismProperties, tlsCertificateKeyFilePassword,
# password=..., a key file path that names the secret).
SAFE_OPTIONS = frozenset({
    "directconnection", "replicaset", "authsource", "authmechanism", "tls", "ssl",
    "retrywrites", "retryreads", "w", "journal", "readpreference", "readconcernlevel",
    "appname", "compressors", "connecttimeoutms", "sockettimeoutms",
    "serverselectiontimeoutms", "maxpoolsize", "minpoolsize", "heartbeat",
    "connection_attempts", "retry_delay", "blocked_connection_timeout", "channel_max",
    "frame_max", "locale", "timeout", "name"})


def partition_count(text: str) -> int:
    """A command-line partition count (``SAGA_PARTITIONS``'s range), for argparse's ``type``:
    a bad one is a one-line error."""
    if not text.isdigit() or int(text) > MAX_PARTITIONS:
        raise argparse.ArgumentTypeError(f"{text!r} partitions: a number from 0 to {MAX_PARTITIONS}")
    return int(text)


def redact(url: str) -> str:
    """A URL safe to print: the password replaced by ***, and the value of every query
    option not known to be harmless too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, question, query = rest.partition("?")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        rest = f"{user}:***@{host}" if ":" in credentials else f"{user}@{host}"
    if question:
        options = [part.partition("=") for part in query.split("&") if part]
        query = "&".join(name + (eq and ("=" + value if name.lower() in SAFE_OPTIONS else "=***"))
                         for name, eq, value in options)
    return f"{scheme}://{rest}{question}{query}"
