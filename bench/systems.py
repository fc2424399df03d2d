"""The three systems under test, each started fresh in a namespace of its own.

Every system is the orchestrator (or the baseline's orchestrator-like process) and one
process per service, each a separate OS process, on the real broker. The product with
the MongoDB stand-in also has one stand-in server per database owner, as the demo does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from bench.catalog import seed
from bench.measure import scrape
from catalog.plan import Platform, owners
from client import connect
from contracts.topology import Topology
from harness.processes import Cluster, ManagedProcess, start_standins
from infra.adapters.rabbit import RabbitTransport
from infra.settings import CommonSettings, common_from_env
from orchestrator.registry import DefinitionRegistry
from orchestrator.settings import OrchestratorSettings
from sagas.order import order_saga

OWNED = "saga_partitions_owned"


class Kind(StrEnum):
    """Which system."""

    BASELINE = "baseline"
    MEMORY = "memory"
    STANDIN = "standin"


LABELS = {
    Kind.BASELINE: "baseline (raw aio-pika, no state)",
    Kind.MEMORY: "product, in-memory stores",
    Kind.STANDIN: "product, MongoDB stand-in (mongoeco), not MongoDB",
}


LOOPS = ("uvloop", "asyncio")
# The loop the product runs on when SAGA_EVENT_LOOP is not set.
PRODUCT_LOOP: str = CommonSettings.model_fields["event_loop"].default


@dataclass(frozen=True, slots=True)
class System:
    """A system and, optionally, the event loop its processes run on (``memory+asyncio``).

    The product's processes run on their default loop (PRODUCT_LOOP) unless told otherwise
    by ``SAGA_EVENT_LOOP``; the baseline is a plain asyncio script unless launched through
    ``bench.uvrun``.
    """

    kind: Kind
    loop: str = ""
    orchestrators: int = 1

    @classmethod
    def parse(cls, text: str) -> System:
        """``baseline``, ``memory``, ``standin``, each optionally ``+uvloop`` or ``+asyncio``;
        ``standin*N`` runs N orchestrator instances on the one saga store."""
        text, star, count = text.strip().partition("*")
        kind, plus, loop = text.partition("+")
        if plus and loop not in LOOPS:
            raise ValueError(f"unknown variant {loop!r} in {text!r}: +uvloop or +asyncio")
        if kind not in {k.value for k in Kind}:
            raise ValueError(f"unknown system {kind!r}: baseline, memory or standin")
        orchestrators = 1
        if star:
            if kind != Kind.STANDIN or not count.isdigit() or not 1 <= int(count) <= 8:
                raise ValueError(f"{text}*{count}: only standin runs several orchestrators "
                                 "(they share its database), 1 to 8 of them")
            orchestrators = int(count)
        return cls(Kind(kind), loop, orchestrators)

    @property
    def name(self) -> str:
        """Short name, as given on the command line."""
        name = f"{self.kind}+{self.loop}" if self.loop else str(self.kind)
        return name if self.orchestrators == 1 else f"{name}*{self.orchestrators}"

    @property
    def event_loop(self) -> str:
        """The loop its processes run on."""
        return self.loop or ("asyncio" if self.kind is Kind.BASELINE else PRODUCT_LOOP)

    @property
    def label(self) -> str:
        """Name in the table."""
        label = f"{LABELS[self.kind]}, {self.event_loop}"
        if self.orchestrators > 1:
            label += f", {self.orchestrators} orchestrators"
        return label

    @property
    def env(self) -> dict[str, str]:
        """The product's own setting for the loop (the baseline has none)."""
        if self.kind is Kind.BASELINE or not self.loop:
            return {}
        return {"SAGA_EVENT_LOOP": self.loop}

    @property
    def uvloop_launcher(self) -> bool:
        """The baseline on uvloop needs the launcher; the product chooses by setting."""
        return self.kind is Kind.BASELINE and self.loop == "uvloop"


def order_services() -> list[str]:
    """The participants the order saga calls: the benchmark's workers."""
    return DefinitionRegistry([order_saga()]).services()


def _module(kind: Kind, role: str) -> tuple[str, tuple[str, ...]]:
    """The module a role of a system runs, and its arguments."""
    if kind is Kind.BASELINE:
        return "bench.baseline", ("orchestrator",) if role == "orchestrator" else ("worker", role)
    if role.startswith("orchestrator"):
        return "orchestrator", ()
    if kind is Kind.MEMORY:
        # In-memory workers need their stock and money seeded in-process.
        return "bench.worker", (role,)
    return "workers", (role,)


@dataclass
class Deployment:
    """One running instance of a system; ``stop`` removes everything it created."""

    kind: Kind
    amqp_url: str
    namespace: str
    log_dir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    uvloop: bool = False
    orchestrators: int = 1
    cluster: Cluster = field(init=False)
    standins: list[ManagedProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topology = Topology(self.namespace)
        # The product's orchestrator registers every shipped definition, so its whole
        # topology is declared (with its partitions' queues); only the order saga's
        # workers run.
        self.plan = replace(Platform.load(CommonSettings()).plan(),
                            partitions=int(self.extra_env.get("SAGA_PARTITIONS", "0")))
        # Nothing of the caller's SAGA_* settings (faults, other namespaces) leaks in.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
        self._env |= {"SAGA_AMQP_URL": self.amqp_url, "SAGA_NAMESPACE": self.namespace,
                      "SAGA_METRICS_HOST": "127.0.0.1",
                      "SAGA_STORE": "memory" if self.kind is Kind.MEMORY else "mongo"}
        self.cluster = Cluster({}, self.log_dir, inherited={})

    async def start(self, transport: RabbitTransport, *, workers: bool = True) -> None:
        """Declare the topology (the product's own declaration, for every system), start the
        stand-ins and seed them if needed, then the processes; wait until all are ready."""
        await transport.declare(self.topology, self.plan)
        if self.kind is Kind.STANDIN:
            await self._start_standins()
        self._env |= dict(self.extra_env)
        self.cluster.env = self._env  # complete now: stand-in URLs and extra settings
        instances = ["orchestrator", *(f"orchestrator-{n}" for n in range(2, self.orchestrators + 1))]
        for role in [*instances, *(order_services() if workers else ())]:
            module, args = _module(self.kind, role)
            self.cluster.add(role, module, args=args,
                             launcher="bench.uvrun" if self.uvloop else None)
        await self.cluster.start()
        await self._partitions_settled(instances)

    async def _partitions_settled(self, instances: list[str], within: float = 60.0) -> None:
        """With partitioned work, wait until the instances hold every partition in even
        shares: the figures are those of the steady state, not of the first hand-over."""
        partitions = self.plan.partitions
        if not partitions:
            return
        ports = {name: self.processes[name].port for name in instances}
        deadline = asyncio.get_running_loop().time() + within
        while True:
            owned = [sum(c.values()) for c in (await scrape(ports, OWNED)).values()]
            if sum(owned) == partitions and max(owned) - min(owned) <= 1:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"partitions not shared out in {within:.0f}s: {owned}")
            await asyncio.sleep(0.2)

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        """The system's processes by role (never the stand-ins)."""
        return self.cluster.processes

    async def _start_standins(self) -> None:
        self.standins, urls = await start_standins(owners(self.plan.services), self.log_dir)
        self._env |= urls | {"SAGA_MONGO_DB": self.namespace.replace("-", "_"),
                             "SAGA_TX_CONCURRENCY": "1"}
        common = common_from_env(self._env, "bench")
        # Seeded through the stores, as the demo does (client.seed).
        from orchestrator.app import definitions

        stores = await connect.stores(common, definitions(OrchestratorSettings(common=common)))
        try:
            for service in ("inventory", "payment"):
                await seed(service, stores.services[service])
        finally:
            await stores.close()

    @property
    def pids(self) -> dict[str, int]:
        """Our own processes (orchestrator and workers; never the stand-ins)."""
        return {name: p.popen.pid for name, p in self.processes.items() if p.popen is not None}

    @property
    def standin_pids(self) -> list[int]:
        """The stand-in servers' processes."""
        return [p.popen.pid for p in self.standins if p.popen is not None]

    @property
    def metrics_ports(self) -> dict[str, int]:
        """/metrics ports of the product's processes (the baseline has no metrics)."""
        if self.kind is Kind.BASELINE:
            return {}
        return {name: p.port for name, p in self.processes.items()}

    def check_alive(self) -> None:
        """Fail loudly if a process died during a measurement."""
        for name, p in self.processes.items():
            if not p.alive:
                raise RuntimeError(f"{self.kind}: {name} died; see {p.log_path}")

    async def stop(self, transport: RabbitTransport) -> None:
        """Stop every process and stand-in, then delete the namespace's queues and exchanges."""
        for process in self.processes.values():
            process.stop()
        for standin in self.standins:
            standin.stop()
        await transport.undeclare(self.topology, self.plan)
