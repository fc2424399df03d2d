"""``sagactl``: submit orders, inspect sagas, seed data, audit the stores, run the demo.

Connection settings come from the same environment variables as the processes
(SAGA_AMQP_URL, SAGA_MONGO_URL, SAGA_MONGO_DB, SAGA_NAMESPACE). Every error is one line on
stderr and a non-zero exit code: 2 for bad arguments, 3 for an unreachable service,
1 for a failed check or order.

``sagactl audit`` exits 0 when every invariant holds and no saga needs attention, 1 when
any invariant is violated, and 4 when the only problem is sagas needing attention. Its
dead-letter check is skipped, with a note, when the broker cannot be reached; an
unreachable database is 3 as everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from audit.run import AuditOptions
from audit.run import run as run_audit
from client import connect, status
from client import definitions as sagactl_definitions
from client.admin import act, default_operator
from client.cancel import cancel
from client.deadletters import DeadLetterError
from client.deadletters import run as dead_letters
from client.orders import OutcomeWatcher, submit
from client.seed import DEFAULT_CURRENCY, Catalog, add_deposit, demo_catalog, seed
from contracts.admin import Action
from contracts.envelope import describe
from contracts.errors import SagaSystemError
from contracts.orders import OrderItem, OrderRequested
from contracts.topology import Topology
from engine.state import SagaStatus
from harness import chaos, up
from harness.broker import BrokerDown
from harness.demo import DemoOptions
from harness.demo import run as run_demo
from harness.processes import LocalExtraMissing
from infra.settings import CommonSettings, SettingsError, common_from_env, partition_count
from orchestrator.app import definitions
from orchestrator.manifests import ManifestError
from orchestrator.registry import RegistrationError, UnknownDefinition
from orchestrator.settings import OrchestratorSettings
from workers.catalog import UnknownParticipant

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class UsageError(SagaSystemError):
    """A bad argument; the message is the one line to print."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line."""

    def error(self, message: str) -> NoReturn:
        """One line, exit code 2."""
        raise UsageError(message)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _port(text: str) -> int:
    port = _positive(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return port


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _instances(text: str) -> int:
    count = _positive(text)
    if count > 8:
        raise argparse.ArgumentTypeError(f"{count} orchestrators: at most 8")
    return count


def _item(text: str) -> OrderItem:
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"item {text!r} must be SKU:QUANTITY:UNIT_PRICE")
    try:
        return OrderItem(sku=parts[0], quantity=int(parts[1]), unit_price=Decimal(parts[2]))
    except (ValueError, InvalidOperation, ValidationError) as e:
        detail = describe(e) if isinstance(e, ValidationError) else "not a number"
        raise argparse.ArgumentTypeError(f"item {text!r}: {detail}") from None


def _pair(kind: str) -> Callable[[str], tuple[str, int]]:
    def parse(text: str) -> tuple[str, int]:
        name, sep, amount = text.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"{kind} {text!r} must be NAME=AMOUNT")
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"{kind} {text!r}: {amount!r} is not a number") from None
        if value <= 0 or value > 10**9:
            raise argparse.ArgumentTypeError(f"{kind} {text!r}: amount must be positive")
        if kind == "sku" and value != value.to_integral_value():
            raise argparse.ArgumentTypeError(f"sku {text!r}: units must be whole")
        return name, int(value if kind == "sku" else value * 100)
    return parse


def parser() -> Parser:
    """The command line."""
    p = Parser(prog="sagactl", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("submit", help="publish an order request; prints the order id")
    s.add_argument("--customer", required=True, help="customer id")
    s.add_argument("--item", type=_item, action="append", required=True,
                   help="SKU:QUANTITY:UNIT_PRICE (repeatable)")
    s.add_argument("--order-id", help="order id (generated when absent)")
    s.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    s.add_argument("--timeout", type=_positive, default=120, help="seconds to wait (default 120)")

    cn = sub.add_parser("cancel", help="cancel a saga before its commit point")
    cn.add_argument("ident", metavar="ID",
                    help="a saga id (definition:key), or a business key such as an order id")
    cn.add_argument("--reason", default="cancelled by an operator", help="why (recorded)")
    cn.add_argument("--timeout", type=_positive, default=60, help="seconds to wait (default 60)")

    for name, help_text, note_help in (
            ("retry", "run a saga's failed confirms or undos again, with fresh attempts",
             "why (recorded in its history)"),
            ("resolve", "record that a saga needing attention was repaired by hand",
             "what was done (required; recorded in its history)")):
        ac = sub.add_parser(name, help=help_text)
        ac.add_argument("ident", metavar="ID",
                        help="a saga id (definition:key), or a business key such as an order id")
        ac.add_argument("--note", required=name == "resolve", default="", help=note_help)
        ac.add_argument("--operator", default=default_operator(),
                        help="who acts (default: the OS user)")
        ac.add_argument("--timeout", type=_positive, default=60,
                        help="seconds to wait for the answer (default 60)")

    dl = sub.add_parser("dlq", help="list, show, replay or purge dead letters")
    dls = dl.add_subparsers(dest="dlq_action", required=True, parser_class=Parser)
    dll = dls.add_parser("list", help="every dead letter (of one queue)")
    dll.add_argument("queue", nargs="?", metavar="QUEUE",
                     help="a dead-letter queue, or the queue it belongs to")
    dll.add_argument("--json", action="store_true")
    dls.add_parser("show", help="one dead letter: headers, body, replayable?").add_argument(
        "ident", metavar="ID")
    for name, help_text in (("replay", "publish dead letters again to where they came from, "
                             "if they pass validation now"),
                            ("purge", "delete dead letters")):
        dla = dls.add_parser(name, help=help_text)
        dla.add_argument("target", nargs="?", metavar="ID|QUEUE",
                         help="a dead letter's id; with --all, an optional queue")
        dla.add_argument("--all", action="store_true", help="every dead letter (of QUEUE)")
        dla.add_argument("--operator", default=default_operator(),
                         help="who acts (default: the OS user)")

    st = sub.add_parser("status", help="one saga: state, steps, attempts and errors")
    st.add_argument("order_id", metavar="ID",
                    help="a saga id (definition:key), or a business key such as an order id")
    st.add_argument("--json", action="store_true")

    ls = sub.add_parser("list", help="sagas, newest first")
    ls.add_argument("--state", choices=[s.value for s in SagaStatus], action="append",
                    help="only these states (repeatable)")
    ls.add_argument("--limit", type=_positive, default=50)
    ls.add_argument("--json", action="store_true")

    sd = sub.add_parser("seed", help="add stock, customer balances and account deposits")
    sd.add_argument("--sku", type=_pair("sku"), action="append", default=[],
                    help="SKU=UNITS to add (repeatable)")
    sd.add_argument("--account", type=_pair("account"), action="append", default=[],
                    help="ACCOUNT=AMOUNT to deposit in the account service (repeatable)")
    sd.add_argument("--currency", default=DEFAULT_CURRENCY, type=_currency,
                    help=f"currency of new accounts (default {DEFAULT_CURRENCY})")
    sd.add_argument("--customer", type=_pair("customer"), action="append", default=[],
                    help="CUSTOMER=AMOUNT to deposit (repeatable)")
    sd.add_argument("--demo-catalog", action="store_true", help="the demo's SKUs and customers")

    au = sub.add_parser("audit", help="check every invariant across the stores and dead letters")
    au.add_argument("--json", action="store_true", help="the whole report as JSON")
    au.add_argument("--no-queues", action="store_true", help="skip the dead-letter queues")
    au.add_argument("--limit", type=_positive, default=10,
                    help="violations listed per invariant (default 10)")
    au.add_argument("--grace", type=_positive, default=60,
                    help="seconds an unfinished saga may overrun its deadline (default 60)")

    d = sub.add_parser("demo", help="run the system on a few hundred orders with faults")
    d.add_argument("--orders", type=_positive, default=None,
                   help="sagas of each kind (orders, transfers) to run (default 300, "
                        "or 200 with --contention)")
    d.add_argument("--transient", type=_probability, default=0.03,
                   help="probability of a transient failure per command (default 0.03)")
    d.add_argument("--reject", type=_probability, default=0.02,
                   help="probability of an injected business rejection (default 0.02)")
    d.add_argument("--duplicate", type=_probability, default=0.02,
                   help="probability of publishing a message twice (default 0.02)")
    d.add_argument("--latency-ms", type=int, default=0, help="added latency per command")
    d.add_argument("--no-crash", action="store_true", help="do not kill the orchestrator midway")
    d.add_argument("--orchestrators", type=_positive, default=1,
                   help="orchestrator instances sharing the work (real processes only)")
    d.add_argument("--embedded", action="store_true", help="one process, in-memory broker and stores")
    d.add_argument("--saga", choices=["order", "transfer", "all"], default="all",
                   help="which shipped saga to run (default: all)")
    d.add_argument("--contention", action="store_true",
                   help="transfers only, among 5 accounts: lock waits and deadlocks galore")
    d.add_argument("--timeout", type=_positive, default=600)

    df = sub.add_parser("definitions", help="registered saga definitions (list, or show one)")
    df.add_argument("action", nargs="?", choices=["show"], help="show one definition")
    df.add_argument("name", nargs="?", help="the definition to show")
    df.add_argument("--version", type=_positive, help="a version (default: the latest)")
    df.add_argument("--mermaid", action="store_true", help="as a Mermaid flowchart")
    df.add_argument("--json", action="store_true", help="as JSON")

    c = sub.add_parser("chaos", help="real processes under faults, then drain and audit")
    c.add_argument("--orders", type=_positive, default=300)
    c.add_argument("--duration", type=_positive, default=60,
                   help="seconds of orders and faults before draining (default 60)")
    c.add_argument("--faults", type=_fault_list, default=",".join(chaos.FAULTS),
                   help=f"comma-separated, from: {','.join(chaos.FAULTS)} (default: all)")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--drain-timeout", type=_positive, default=300)
    c.add_argument("--orchestrators", type=_instances, default=1,
                   help="orchestrator instances, 1 to 8 (default 1)")
    c.add_argument("--partitions", type=partition_count, default=0,
                   help="SAGA_PARTITIONS of the orchestrators (default 0: not partitioned)")

    u = sub.add_parser("up", help="run the whole system on this machine until Ctrl-C")
    u.add_argument("--no-console", dest="console", action="store_false",
                   help="do not start the console")
    u.add_argument("--console-port", type=_port, default=8088)
    u.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="logs and stand-in data (default: a new temporary folder)")
    return p


async def _submit(common: CommonSettings, args: argparse.Namespace) -> int:
    order = OrderRequested(order_id=args.order_id or os.urandom(8).hex(),
                           customer_id=args.customer, items=tuple(args.item))
    topology = Topology(common.namespace)
    transport = await connect.transport(common)
    try:
        watcher = OutcomeWatcher(transport, topology)
        if args.wait:
            await watcher.start()
        await submit(transport, topology, order)
        print(order.order_id)
        if not args.wait:
            return 0
        assert order.order_id is not None
        if await watcher.wait_for({order.order_id}, args.timeout):
            print(f"no outcome within {args.timeout}s", file=sys.stderr)
            return EXIT_FAILED
        outcome = watcher.outcomes[order.order_id]
        if outcome.failed is not None:
            print(f"failed: {outcome.failed.reason_code}: {outcome.failed.reason}")
            return EXIT_FAILED
        print("completed")
        return 0
    finally:
        await transport.close()


async def _cancel(common: CommonSettings, args: argparse.Namespace) -> int:
    try:
        cancelled = await cancel(common, args.ident, args.reason, args.timeout, sys.stdout)
    except status.NotFound as e:
        print(f"sagactl: {e}", file=sys.stderr)
        return EXIT_FAILED
    return 0 if cancelled else EXIT_FAILED


async def _act(common: CommonSettings, args: argparse.Namespace) -> int:
    try:
        done = await act(common, args.ident, Action(args.command), args.operator, args.note,
                         args.timeout, sys.stdout)
    except status.NotFound as e:
        print(f"sagactl: {e}", file=sys.stderr)
        return EXIT_FAILED
    return 0 if done else EXIT_FAILED


async def _dlq(common: CommonSettings, args: argparse.Namespace) -> int:
    action = args.dlq_action
    ident = getattr(args, "ident", None)
    queue = getattr(args, "queue", None)
    if action in ("replay", "purge"):
        if args.all:
            queue = args.target
        elif args.target is None:
            print(f"sagactl: dlq {action} needs a dead letter's id, or --all", file=sys.stderr)
            return EXIT_USAGE
        else:
            ident = args.target
    try:
        return await dead_letters(common, action, ident, queue, getattr(args, "json", False),
                                  getattr(args, "operator", ""), sys.stdout)
    except DeadLetterError as e:
        print(f"sagactl: {e}", file=sys.stderr)
        return EXIT_FAILED


async def _inspect(common: CommonSettings, args: argparse.Namespace) -> int:
    stores = await connect.stores(common, definitions(OrchestratorSettings(common=common)))
    try:
        if args.command == "status":
            record = await status.lookup(stores.sagas, args.order_id)
            print(json.dumps(status.as_json(record), indent=2) if args.json
                  else status.as_text(record))
            return 0
        states = None if not args.state else [SagaStatus(s) for s in args.state]
        records = await stores.sagas.find(states, args.limit)
        quarantined = (await stores.sagas.quarantined(args.limit)
                       if states and SagaStatus.QUARANTINED in states else [])
        if args.json:
            print(json.dumps([*(status.as_json(r) for r in records),
                              *(status.quarantined_json(q) for q in quarantined)], indent=2))
        else:
            for r in records:
                print(status.row(r))
            for q in quarantined:
                print(status.quarantined_row(q))
        return 0
    except status.NotFound as e:
        print(f"sagactl: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await stores.close()


async def _seed(common: CommonSettings, args: argparse.Namespace) -> int:
    if not (args.sku or args.customer or args.account or args.demo_catalog):
        raise UsageError("seed needs --sku, --customer, --account or --demo-catalog")
    catalog = demo_catalog() if args.demo_catalog else Catalog({}, {}, {})
    catalog = Catalog({**catalog.stock, **dict(args.sku)},
                      {**catalog.balances, **dict(args.customer)}, catalog.prices)
    stores = await connect.stores(common, definitions(OrchestratorSettings(common=common)))
    try:
        if catalog.stock or catalog.balances:
            await seed(stores.services["inventory"], stores.services["payment"], catalog)
        for account, cents in args.account:
            await add_deposit(stores.services["account"], account, cents, args.currency)
    finally:
        await stores.close()
    print(f"added stock for {len(catalog.stock)} SKUs, funds for {len(catalog.balances)} "
          f"customers and deposits in {len(args.account)} accounts")
    return 0


def _currency(text: str) -> str:
    if len(text) != 3 or not text.isalpha() or not text.isupper():
        raise argparse.ArgumentTypeError(f"{text!r} is not a three-letter currency code (EUR)")
    return text


async def _audit(common: CommonSettings, args: argparse.Namespace) -> int:
    opts = AuditOptions(queues=not args.no_queues, as_json=args.json, limit=args.limit,
                        grace=float(args.grace))
    return await run_audit(common, opts, sys.stdout)


# The contention run: this many transfers among this many accounts, in random directions,
# this many at a time (four times as many transfers as accounts: each account is wanted by
# several at once, so lock waits and deadlocks are the rule, yet none waits for all 200).
CONTENTION_TRANSFERS = 200
CONTENTION_ACCOUNTS = 5
CONTENTION_IN_FLIGHT = 20


def _demo_sagas(args: argparse.Namespace) -> tuple[str, ...]:
    if args.contention:
        return ("transfer",)
    return ("order", "transfer") if args.saga == "all" else (args.saga,)


async def _demo(common: CommonSettings, args: argparse.Namespace) -> int:
    if args.contention and args.saga == "order":
        raise UsageError("--contention runs transfers: it cannot go with --saga order")
    orders = args.orders or (CONTENTION_TRANSFERS if args.contention else 300)
    opts = DemoOptions(orders=orders, transient_rate=args.transient, reject_rate=args.reject,
                       duplicate_rate=args.duplicate, latency_ms=args.latency_ms,
                       crash_orchestrator=not args.no_crash, embedded=args.embedded,
                       sagas=_demo_sagas(args),
                       contention=CONTENTION_ACCOUNTS if args.contention else 0,
                       in_flight=CONTENTION_IN_FLIGHT if args.contention else 0,
                       orchestrators=args.orchestrators,
                       timeout=args.timeout)
    return await run_demo(common, opts, bool(os.environ.get("SAGA_MONGO_URL")), sys.stdout)


def _fault_list(text: str) -> str:
    unknown = {f for f in text.split(",") if f} - set(chaos.FAULTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault(s): {', '.join(sorted(unknown))}")
    return text


async def _chaos(common: CommonSettings, args: argparse.Namespace) -> int:
    opts = chaos.ChaosOptions(orders=args.orders, duration=args.duration,
                              faults=frozenset(f for f in args.faults.split(",") if f),
                              seed=args.seed, drain_timeout=args.drain_timeout,
                              orchestrators=args.orchestrators, partitions=args.partitions)
    try:
        return await chaos.run(common, opts, bool(os.environ.get("SAGA_MONGO_URL")),
                               sys.stdout)
    except BrokerDown as e:
        print(f"sagactl: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE


async def _up(common: CommonSettings, args: argparse.Namespace) -> int:
    opts = up.UpOptions(console=args.console, console_port=args.console_port, data=args.data)
    try:
        return await up.run(common, opts, bool(os.environ.get("SAGA_MONGO_URL")), sys.stdout)
    except RuntimeError as e:  # a process that exits before it is ready (a port in use)
        print(f"sagactl: {e}", file=sys.stderr)
        return EXIT_FAILED


async def _definitions(common: CommonSettings, args: argparse.Namespace) -> int:
    registry = definitions(OrchestratorSettings(common=common))
    if args.action is None:
        if args.name or args.mermaid or args.version:
            raise UsageError("use: sagactl definitions show NAME [--version N] [--mermaid]")
        return sagactl_definitions.list_all(registry, args.json, sys.stdout)
    if args.name is None:
        raise UsageError("definitions show needs a definition name")
    try:
        return sagactl_definitions.show(registry, args.name, args.version, args.mermaid,
                                        sys.stdout)
    except UnknownDefinition as e:
        print(f"sagactl: {e}", file=sys.stderr)
        return EXIT_FAILED


COMMANDS = {"submit": _submit, "cancel": _cancel, "retry": _act, "resolve": _act, "dlq": _dlq,
            "definitions": _definitions, "status": _inspect,
            "list": _inspect, "seed": _seed, "demo": _demo, "chaos": _chaos, "audit": _audit,
            "up": _up}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sagactl`` script."""
    # Library chatter (connection retries) would break the one-line error promise.
    logging.basicConfig(level=logging.CRITICAL)
    try:
        args = parser().parse_args(argv)
        common = common_from_env(os.environ, "sagactl")
        return asyncio.run(_terminable(COMMANDS[args.command](common, args)))
    except (UsageError, SettingsError, RegistrationError, UnknownParticipant,
            ManifestError, LocalExtraMissing) as e:
        print(f"sagactl: {e}", file=sys.stderr)
        return EXIT_USAGE
    except connect.Unreachable as e:
        print(f"sagactl: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        return 143


async def _terminable(command: Coroutine[Any, Any, int]) -> int:
    """Run a command so that SIGTERM cancels it like Ctrl-C does: its clean-up (stopping
    the processes a demo or chaos run started) runs instead of leaving orphans."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await command


if __name__ == "__main__":
    sys.exit(main())
