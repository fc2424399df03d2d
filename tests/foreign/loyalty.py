"""A saga participant written without this project: pika, sqlite3 and the standard library.

It exists to prove that the wire contract (docs/asyncapi.yaml, "Participant rules") is
enough to take part in sagas: nothing here is imported from the project. The service
"loyalty" has one two-phase operation, ``award`` {member, points}: prepare records a
pending award, confirm adds the points, cancel drops the pending award; a prepare of more
than 1000 points is refused with TOO_MANY_POINTS. Its manifest is loyalty.json.

Each command is handled in one SQLite transaction: the inbox (message id -> recorded
reply), the fence ((saga id, step) -> state) and the business tables change together.
The reply is published with publisher confirms; the command is acked after that.
Invalid commands are dead-lettered as the Python SDK does it: a copy goes to
``<ns>.saga.dlx`` (routing key = the queue) with ``x-dead-letter-reason``, then the
command is acked. The queue is declared passively: the orchestrator declares it from the
manifest.

Environment: SAGA_AMQP_URL, SAGA_NAMESPACE, LOYALTY_DB (the SQLite file), and
SAGA_METRICS_PORT, where GET /readyz answers 200 while consuming.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pika

log = logging.getLogger("loyalty")

SERVICE = "loyalty"
MAX_POINTS = 1000
PHASES = {f"{SERVICE}.award.prepare": "forward", f"{SERVICE}.award.confirm": "confirm",
          f"{SERVICE}.award.cancel": "compensate"}
MESSAGE_ID = re.compile(r"[\x21-\x7e]{1,200}")
SAGA_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
STEP = re.compile(r"[a-z0-9_]{1,64}")
MEMBER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")

# The fence rules of the contract: (operation, state of the step here) -> what to do.
RULES = {("forward", None): "run", ("forward", "tried"): "replay",
         ("forward", "rejected"): "replay", ("forward", "confirmed"): "replay",
         ("forward", "compensated"): "suspended", ("confirm", "tried"): "run",
         ("confirm", "confirmed"): "replay", ("compensate", None): "empty_rollback",
         ("compensate", "tried"): "run", ("compensate", "rejected"): "empty_rollback",
         ("compensate", "compensated"): "replay"}
AFTER_RUN = {"forward": "tried", "confirm": "confirmed", "compensate": "compensated"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (member TEXT PRIMARY KEY, points INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending_awards (saga_id TEXT, step TEXT, member TEXT NOT NULL,
    points INTEGER NOT NULL, PRIMARY KEY (saga_id, step));
CREATE TABLE IF NOT EXISTS fences (saga_id TEXT, step TEXT, state TEXT NOT NULL,
    reason_code TEXT, detail TEXT NOT NULL DEFAULT '', PRIMARY KEY (saga_id, step));
CREATE TABLE IF NOT EXISTS inbox (message_id TEXT PRIMARY KEY, command_type TEXT NOT NULL,
    reply TEXT NOT NULL, at REAL NOT NULL);
"""

Verdict = tuple[str, str | None, str]  # outcome, reason code, detail


class Invalid(Exception):
    """A command this service can never carry out: dead-lettered, never answered."""


def named(base: str) -> str:
    """An exchange or queue name in this deployment's namespace."""
    namespace = os.environ.get("SAGA_NAMESPACE", "")
    return f"{namespace}.{base}" if namespace else base


def decode(props: Any, body: bytes) -> tuple[str, dict[str, Any]]:
    """The operation and body of a valid command; raises Invalid."""
    if props.type not in PHASES:
        raise Invalid(f"{props.type!r} is not a command of the {SERVICE} service")
    headers = props.headers or {}
    version = headers.get("x-schema-version")
    if not MESSAGE_ID.fullmatch(props.message_id or "") or props.timestamp is None:
        raise Invalid("invalid envelope: message_id or timestamp missing or malformed")
    if type(version) is not int or version != 1:
        raise Invalid("invalid envelope: header x-schema-version must be the integer 1")
    if len(body) > 64 * 1024:
        raise Invalid(f"body of {len(body)} bytes exceeds the 65536 limit")
    try:
        command = json.loads(body)
    except ValueError as e:
        raise Invalid(f"body is not JSON: {e}") from e
    if not isinstance(command, dict) or not set(command) <= {"saga_id", "step", "params",
                                                             "failure"}:
        raise Invalid("body is not a StepCommand object")
    if not (isinstance(command.get("saga_id"), str) and SAGA_ID.fullmatch(command["saga_id"])
            and isinstance(command.get("step"), str) and STEP.fullmatch(command["step"])):
        raise Invalid("invalid StepCommand: saga_id or step missing or malformed")
    if command["saga_id"] != props.correlation_id:
        raise Invalid("command saga_id does not match its correlation_id")
    command["params"] = award_params(command.get("params"))
    return PHASES[props.type], command


def award_params(params: Any) -> dict[str, Any]:
    """The award's parameters, checked as the manifest's schema says."""
    if not isinstance(params, dict) or set(params) != {"member", "points"}:
        raise Invalid("invalid award params: exactly member and points are required")
    member, points = params["member"], params["points"]
    if isinstance(points, float) and points.is_integer():
        points = int(points)  # JSON Schema counts 5.0 as an integer
    if not (isinstance(member, str) and MEMBER.fullmatch(member)):
        raise Invalid("invalid award params: member must match ^[A-Za-z0-9_.-]{1,64}$")
    if type(points) is not int or not 1 <= points <= 10**9:
        raise Invalid("invalid award params: points must be an integer from 1 to 10^9")
    return {"member": member, "points": points}


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed at the end, rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def handle(db: sqlite3.Connection, message_id: str, kind: str, op: str,
           command: dict[str, Any]) -> dict[str, Any]:
    """The reply to a command: the recorded one for a duplicate, else the fence's verdict,
    with its effects, the fence and the inbox written in one transaction."""
    with transaction(db):
        seen = db.execute("SELECT reply FROM inbox WHERE message_id = ?", (message_id,)).fetchone()
        if seen is not None:
            log.info("duplicate %s: answering with the recorded reply", message_id)
            recorded: dict[str, Any] = json.loads(seen[0])
            return recorded
        outcome, reason_code, detail = judge(db, op, command["saga_id"], command["step"],
                                             command["params"])
        reply = {"saga_id": command["saga_id"], "step": command["step"], "operation": op,
                 "outcome": outcome, "reason_code": reason_code, "detail": detail[:500]}
        db.execute("INSERT INTO inbox VALUES (?, ?, ?, ?)",
                   (message_id, kind, json.dumps(reply), time.time()))
        return reply


def judge(db: sqlite3.Connection, op: str, saga_id: str, step: str,
          params: dict[str, Any]) -> Verdict:
    """Apply the fence rule for ``op`` given what happened to the step here before."""
    fence = db.execute("SELECT state, reason_code, detail FROM fences WHERE saga_id = ? "
                       "AND step = ?", (saga_id, step)).fetchone()
    state = fence[0] if fence else None
    match RULES.get((op, state), "impossible"):
        case "run":
            verdict = run(db, op, saga_id, step, params)
            if verdict[0] == "succeeded":
                set_fence(db, saga_id, step, AFTER_RUN[op])
            return verdict
        case "replay" if state == "rejected":
            return "rejected", fence[1], fence[2]
        case "replay":
            return "succeeded", None, f"already {state}"
        case "empty_rollback":
            set_fence(db, saga_id, step, "compensated")
            return "succeeded", None, "nothing to undo"
        case "suspended":
            return "rejected", "CANCELLED", "the step was undone before this command arrived"
    return "permanent_error", None, f"cannot {op} a step that is {state or 'never started'}"


def run(db: sqlite3.Connection, op: str, saga_id: str, step: str,
        params: dict[str, Any]) -> Verdict:
    """The business effect of one phase of ``award``."""
    member, points = params["member"], params["points"]
    if op == "forward":
        if points > MAX_POINTS:
            detail = f"{points} points exceed the limit of {MAX_POINTS} per award"
            set_fence(db, saga_id, step, "rejected", "TOO_MANY_POINTS", detail)
            return "rejected", "TOO_MANY_POINTS", detail
        db.execute("INSERT INTO pending_awards VALUES (?, ?, ?, ?)",
                   (saga_id, step, member, points))
        return "succeeded", None, f"{points} points pending for {member}"
    pending = db.execute("DELETE FROM pending_awards WHERE saga_id = ? AND step = ? "
                         "RETURNING member, points", (saga_id, step)).fetchone()
    if pending is None:
        return "permanent_error", None, "the step was prepared but its pending award is gone"
    if op == "confirm":
        db.execute("INSERT INTO members VALUES (?, ?) ON CONFLICT (member) "
                   "DO UPDATE SET points = points + excluded.points", pending)
        return "succeeded", None, f"{pending[1]} points awarded to {pending[0]}"
    return "succeeded", None, f"pending award of {pending[1]} points to {pending[0]} dropped"


def set_fence(db: sqlite3.Connection, saga_id: str, step: str, state: str,
              reason_code: str | None = None, detail: str = "") -> None:
    """Record what has now happened to the step."""
    db.execute("INSERT INTO fences VALUES (?, ?, ?, ?, ?) ON CONFLICT (saga_id, step) DO UPDATE "
               "SET state = excluded.state, reason_code = excluded.reason_code, "
               "detail = excluded.detail", (saga_id, step, state, reason_code, detail))


def reply_id(command_id: str) -> str:
    """``<command id>:reply``, hashed down when longer than 200 characters."""
    candidate = f"{command_id}:reply"
    if len(candidate) <= 200:
        return candidate
    return f"{hashlib.sha256(command_id.encode()).hexdigest()}:reply"


def child_trace(parent: Any, message_id: str) -> str | None:
    """The reply's traceparent: the command's trace id, a span id derived from its id."""
    match = TRACEPARENT.fullmatch(parent) if isinstance(parent, str) else None
    if match is None or match[1] == "0" * 32 or match[2] == "0" * 16:
        return None
    span = hashlib.sha256(message_id.encode()).hexdigest()[:16]
    return f"00-{match[1]}-{span if span != '0' * 16 else '0' * 15 + '1'}-01"


def publish_reply(channel: Any, user: str, command: Any, reply: dict[str, Any]) -> None:
    """Publish the reply and wait for the broker's confirm (pika raises if it nacks). It
    carries our broker user as user_id: the orchestrator accepts a reply to a loyalty
    command only from the user mapped to loyalty (SAGA_REPLY_USERS)."""
    message_id = reply_id(command.message_id)
    headers: dict[str, Any] = {"x-causation-id": command.message_id, "x-schema-version": 1}
    trace = child_trace((command.headers or {}).get("traceparent"), message_id)
    if trace is not None:
        headers["traceparent"] = trace
    channel.basic_publish(named("saga.replies"), "reply", json.dumps(reply).encode(),
                          pika.BasicProperties(
                              content_type="application/json", delivery_mode=2,
                              message_id=message_id, correlation_id=reply["saga_id"],
                              type="saga.reply", timestamp=int(time.time()), headers=headers,
                              user_id=user))


def dead_letter(channel: Any, props: Any, body: bytes, reason: str) -> None:
    """Copy the command to the dead-letter exchange with the reason, confirmed."""
    queue = named(f"{SERVICE}.commands")
    headers = {**(props.headers or {}), "x-dead-letter-reason": reason[:1000],
               "x-dead-letter-error": "InvalidMessage", "x-original-queue": queue,
               "x-dead-lettered-at": datetime.now(UTC).isoformat()}
    channel.basic_publish(named("saga.dlx"), queue, body, pika.BasicProperties(
        content_type=props.content_type, delivery_mode=2, message_id=props.message_id,
        correlation_id=props.correlation_id, type=props.type, timestamp=props.timestamp,
        headers=headers))
    log.warning("dead-lettered %s: %s", props.message_id, reason)


def on_command(db: sqlite3.Connection, user: str, channel: Any, method: Any, props: Any,
               body: bytes) -> None:
    """Decode, handle, reply, then ack; an invalid command is dead-lettered, then acked."""
    try:
        op, command = decode(props, body)
    except Invalid as e:
        dead_letter(channel, props, body, str(e))
    else:
        try:
            reply = handle(db, props.message_id, props.type, op, command)
        except sqlite3.Error as e:  # not the command's fault: the orchestrator retries it
            log.error("database error: %r", e)
            reply = {"saga_id": command["saga_id"], "step": command["step"], "operation": op,
                     "outcome": "retryable_error", "reason_code": None,
                     "detail": "database error; try again"}
        publish_reply(channel, user, props, reply)
        log.info("handled %s %s: %s", props.type, props.message_id, reply["outcome"])
    channel.basic_ack(method.delivery_tag)


def serve_readyz(ready: threading.Event) -> None:
    """GET /readyz: 200 while consuming, 503 otherwise (in a daemon thread)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = (200 if ready.is_set() else 503) if self.path == "/readyz" else 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per probe would drown the log

    address = (os.environ.get("SAGA_METRICS_HOST", "127.0.0.1"),
               int(os.environ.get("SAGA_METRICS_PORT", "9100")))
    server = http.server.ThreadingHTTPServer(address, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def consume(db: sqlite3.Connection, ready: threading.Event) -> None:
    """Consume the command queue until the connection is lost."""
    parameters = pika.URLParameters(os.environ.get("SAGA_AMQP_URL",
                                                   "amqp://guest:guest@127.0.0.1:5672/"))
    parameters.client_properties = {"connection_name": f"worker-{SERVICE}-pika"}
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = named(f"{SERVICE}.commands")
        channel.queue_declare(queue, passive=True)  # the orchestrator declares it
        channel.basic_qos(prefetch_count=16)
        user = parameters.credentials.username
        channel.basic_consume(queue, lambda ch, m, p, b: on_command(db, user, ch, m, p, b))
        ready.set()
        log.info("consuming %s", queue)
        channel.start_consuming()
    finally:
        ready.clear()
        if connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()


def main() -> None:
    """Open the database, serve /readyz, and consume, reconnecting after every loss."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                        format="%(asctime)s %(levelname)s loyalty: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)  # it logs every connection step
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    db = sqlite3.connect(os.environ["LOYALTY_DB"], isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(SCHEMA)
    ready = threading.Event()
    serve_readyz(ready)
    try:
        while True:
            try:
                consume(db, ready)
            except pika.exceptions.AMQPError as e:
                log.warning("broker unreachable, connection lost or queue missing (%r); "
                            "retrying in 1 s", e)
                time.sleep(1.0)
    finally:
        db.close()


if __name__ == "__main__":
    main()
