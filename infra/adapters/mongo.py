"""MongoDB connection and error translation, shared by the orchestrator and the workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pymongo import AsyncMongoClient
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from infra.errors import DuplicateKey, StoreFailed, StoreUnavailable, VersionConflict

WRITE_CONFLICT = 112

# Server error codes that mean "not now" rather than "never": the retryable-writes
# specification's list (a primary stepping down, a node shutting down, a network error on the
# server side), plus time limits and write-concern timeouts, which a failover produces too.
RETRYABLE_CODES = frozenset({
    6, 7, 89, 91, 189, 9001, 10107, 11600, 11602, 13435, 13436,  # retryable-writes spec
    134,  # ReadConcernMajorityNotAvailableYet
    50, 262,  # MaxTimeMSExpired, ExceededTimeLimit
    64,  # WriteConcernFailed (wtimeout)
    43,  # CursorNotFound: the cursor's node went away; the query can be run again
})
# Error labels the server or the driver attach when a retry is safe and may succeed.
RETRYABLE_LABELS = ("RetryableWriteError", "UnknownTransactionCommitResult", "NoWritesPerformed")


class CommandCounter(CommandListener):
    """Counts every command the driver sends (PyMongo command monitoring), so the cost of a
    saga in database round trips is visible on /metrics and in the benchmark."""

    # Anything else (driver internals, future commands) is counted as "other": bounded labels.
    KNOWN = frozenset({"find", "insert", "update", "delete", "findAndModify", "aggregate",
                       "count", "getMore", "createIndexes", "commitTransaction",
                       "abortTransaction", "ping", "hello", "isMaster", "endSessions"})

    def __init__(self, registry: CollectorRegistry) -> None:
        self.commands = Counter("saga_db_commands_total", "Commands sent to the database.",
                                ["command"], registry=registry)
        self.failures = Counter("saga_db_command_failures_total",
                                "Database commands that failed.", ["command"],
                                registry=registry)

    def _name(self, name: str) -> str:
        return name if name in self.KNOWN else "other"

    def started(self, event: CommandStartedEvent) -> None:
        self.commands.labels(self._name(event.command_name)).inc()

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        self.failures.labels(self._name(event.command_name)).inc()


def client(url: str, *, app_name: str, listeners: list[CommandListener] | None = None,
           timeout_ms: int = 5000) -> AsyncMongoClient[dict[str, Any]]:
    """A client that fails fast (seconds, not the driver's 30 s default) when the server is gone."""
    return AsyncMongoClient(
        url,
        appname=app_name,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        event_listeners=listeners or [],
        tz_aware=True,
    )


async def wait_until_ready(mongo: AsyncMongoClient[dict[str, Any]], within: float = 60.0) -> None:
    """Ping until the server answers (it may still be starting), then return."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(PyMongoError),
        wait=wait_exponential(multiplier=0.2, max=3.0),
        stop=stop_after_delay(within),
        reraise=True,
    ):
        with attempt:
            await mongo.admin.command("ping")


def is_write_conflict(e: PyMongoError) -> bool:
    """MongoDB reports a concurrent transaction on the same document as a write conflict
    (code 112, labelled TransientTransactionError); some servers only say so in the text."""
    if isinstance(e, OperationFailure) and e.code == WRITE_CONFLICT:
        return True
    if e.has_error_label("TransientTransactionError"):
        return True
    text = str(e).lower()
    # The stand-in's SQLite engine runs one transaction at a time and refuses the others
    # while it is open: the same situation for the caller, try again shortly.
    return "write conflict" in text or "active transaction bound to another session" in text


def is_retryable(e: PyMongoError) -> bool:
    """True for an error MongoDB marks as transient, by its type, labels or codes."""
    if isinstance(e, (ExecutionTimeout, WTimeoutError)):
        return True
    if any(e.has_error_label(label) for label in RETRYABLE_LABELS):
        return True
    codes = {getattr(e, "code", None)}
    if isinstance(e, BulkWriteError):
        # A bulk write reports per-write and write-concern errors in its details.
        codes |= {error.get("code") for error in e.details.get("writeConcernErrors", [])}
    if isinstance(e, OperationFailure) and isinstance(e.details, dict):
        concern = e.details.get("writeConcernError")
        if isinstance(concern, dict):
            codes.add(concern.get("code"))
    return bool(codes & RETRYABLE_CODES)


@contextmanager
def translated() -> Iterator[None]:
    """Turn driver errors into the system's error tree: what a retry may fix is transient
    (StoreUnavailable, VersionConflict), the rest is StoreFailed."""
    try:
        yield
    except DuplicateKeyError as e:
        raise DuplicateKey(str(e)) from e
    except (ConnectionFailure, ServerSelectionTimeoutError) as e:
        raise StoreUnavailable(f"database unreachable: {type(e).__name__}") from e
    except PyMongoError as e:
        if is_write_conflict(e):
            raise VersionConflict(f"write conflict: {e}") from e
        if is_retryable(e):
            raise StoreUnavailable(f"database busy: {type(e).__name__}: {e}"[:500]) from e
        raise StoreFailed(f"database error: {type(e).__name__}: {e}"[:500]) from e
