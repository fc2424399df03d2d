"""The architecture, checked: the import graph and the size of each room.

Read from the source with ``ast`` (no module is imported): every ``import`` counts, also
one inside a function, except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from functools import cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("contracts", "engine", "infra", "orchestrator", "sagas", "workers", "catalog")
TOOLS = ("client", "audit", "harness", "sagactl", "console", "bench")
PACKAGES = PRODUCT + TOOLS
# The pure core: the saga engine with the shipped definitions, and the business handlers.
PURE = ("engine", "sagas", "workers.sdk", "workers.account", "workers.inventory",
        "workers.order", "workers.payment", "workers.shipping", "workers.notification")
# Libraries and modules that do I/O, or run or observe it.
IO_LIBRARIES = ("asyncio", "aio_pika", "aiormq", "pymongo", "bson", "socket", "http",
                "urllib", "starlette", "uvicorn", "prometheus_client", "subprocess", "os",
                "logging", "time")
IO_MODULES = ("infra.adapters.rabbit", "infra.adapters.mongo", "infra.adapters.memory_bus",
              "infra.process", "infra.http", "infra.consumer", "orchestrator.store_mongo",
              "workers.store_mongo", "orchestrator.runner", "workers.runtime")
# No room holds more than this share of the code.
MAX_SHARE = 0.25


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every first-party module of the product and its tools."""
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, minus the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imported(module: str, path: Path) -> Iterator[str]:
    """The full dotted names ``module`` imports at run time."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _owner(name: str) -> str | None:
    """The first-party module a dotted name belongs to, if any."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


@cache
def graph() -> dict[str, frozenset[str]]:
    """First-party module -> the first-party modules it imports."""
    edges: dict[str, frozenset[str]] = {}
    for module, path in modules().items():
        targets = {_owner(name) for name in _imported(module, path)}
        edges[module] = frozenset(t for t in targets if t is not None and t != module)
    return edges


def external(module: str) -> set[str]:
    """The top-level names of the third-party and standard modules ``module`` imports."""
    return {name.split(".")[0] for name in _imported(module, modules()[module])
            if _owner(name) is None and name}


def reachable(start: str) -> set[str]:
    """``start`` and every first-party module it imports, directly or not."""
    seen, todo = {start}, [start]
    while todo:
        for target in graph()[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_is_read() -> None:
    """The checks below see the real code: the engine imports its definitions, and the
    CLI imports the client library."""
    assert "engine.definition" in graph()["engine.decide"]
    assert any(_top(t) == "client" for t in graph()["sagactl.cli"])


def test_no_module_imports_itself_in_a_circle() -> None:
    """A circle of imports works only in the right import order, and makes its modules
    one unit that cannot be understood, tested or moved apart."""
    try:
        tuple(TopologicalSorter(graph()).static_order())
    except CycleError as e:
        pytest.fail(f"import circle: {' -> '.join(e.args[1])}")


def test_no_room_imports_itself_in_a_circle() -> None:
    """The rooms (top-level packages) form layers too: a room that needs another which
    needs it back cannot be read, shipped or replaced on its own."""
    rooms: dict[str, set[str]] = {}
    for module, targets in graph().items():
        rooms.setdefault(_top(module), set()).update(_top(t) for t in targets)
    try:
        tuple(TopologicalSorter({r: t - {r} for r, t in rooms.items()}).static_order())
    except CycleError as e:
        pytest.fail(f"rooms in a circle: {' -> '.join(e.args[1])}")


def test_the_contracts_depend_on_nothing_of_ours() -> None:
    """The wire contract is what every other part and every client builds on."""
    for module in modules():
        if _top(module) == "contracts":
            assert {_top(t) for t in graph()[module]} <= {"contracts"}, module


def test_the_engine_depends_only_on_the_contracts() -> None:
    """The engine is the orchestrator's pure core, and saga definitions are written
    against it: it knows no adapter, no process and no participant."""
    for module in modules():
        if _top(module) == "engine":
            assert {_top(t) for t in graph()[module]} <= {"contracts", "engine"}, module


def test_infra_depends_only_on_the_contracts() -> None:
    """Ports, adapters and the process runtime know no orchestrator and no worker."""
    for module in modules():
        if _top(module) == "infra":
            assert {_top(t) for t in graph()[module]} <= {"contracts", "infra"}, module


def test_the_product_never_imports_its_tools() -> None:
    """The CLI, the client library, the auditor, the local-run harness, the console and
    the benchmark use the product; a deployed orchestrator or worker needs none of them."""
    for module in modules():
        if _top(module) in PRODUCT:
            tools = {_top(t) for t in graph()[module]} & set(TOOLS)
            assert not tools, f"{module} imports {sorted(tools)}"


def test_nothing_imports_the_cli() -> None:
    """sagactl parses arguments and calls libraries; what others need lives in those."""
    for module in modules():
        if _top(module) != "sagactl":
            assert all(_top(t) != "sagactl" for t in graph()[module]), module


@pytest.mark.parametrize("core", PURE)
def test_the_engine_and_the_business_handlers_do_no_io(core: str) -> None:
    """The engine and the handlers are pure functions of their inputs: no broker, no
    database, no clock, no event loop, not even through a module they import."""
    names = [m for m in modules() if m == core or m.startswith(f"{core}.")]
    assert names, core
    for name in names:
        for module in reachable(name):
            assert module not in IO_MODULES, f"{name} reaches {module}"
            assert not external(module) & set(IO_LIBRARIES), (
                f"{name} reaches {module}, which imports {external(module) & set(IO_LIBRARIES)}")


def _lines(package: str) -> int:
    return sum(len(p.read_text(encoding="utf-8").splitlines())
               for p in (ROOT / package).rglob("*.py"))


def test_no_room_holds_more_than_a_quarter_of_the_code() -> None:
    """Tooling once outweighed the product, and one package held 30% of the code: each
    package stays a room of its own size."""
    sizes = {package: _lines(package) for package in PACKAGES}
    total = sum(sizes.values())
    for package, size in sizes.items():
        assert size / total <= MAX_SHARE, f"{package}: {size} of {total} lines"


def _classes() -> dict[str, list[str]]:
    """Every class of the product and its tools by name, with its bases' names."""
    found: dict[str, list[str]] = {}
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                found[node.name] = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
    return found


def _derives(name: str, root: str, classes: dict[str, list[str]]) -> bool:
    if name == root:
        return True
    return any(_derives(base, root, classes) for base in classes.get(name, ()))


def test_every_exception_joins_the_one_error_tree() -> None:
    """One root (contracts.errors.SagaSystemError) lets a caller tell the system's own
    errors from bugs, and carries ``retryable`` everywhere."""
    classes = _classes()
    builtin = {name for name in dir(builtins)
               if isinstance(getattr(builtins, name), type)
               and issubclass(getattr(builtins, name), BaseException)}
    exceptions = [name for name, bases in classes.items()
                  if any(b in builtin or _derives(b, "SagaSystemError", classes) for b in bases)]
    assert "CodecError" in exceptions
    assert "Rejected" in exceptions
    outside = sorted(name for name in exceptions if not _derives(name, "SagaSystemError", classes))
    assert outside == []
