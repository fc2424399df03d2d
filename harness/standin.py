"""A MongoDB stand-in: the mongoeco wire-protocol server, in its own process.

Where no MongoDB server exists (these build machines), the real PyMongo driver talks to
this over TCP. It supports transactions and unique indexes, not change streams, and its
speed says nothing about MongoDB's. ``python -m harness.standin --port 27017``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

# The password of --user comes from the environment, never from the command line (which
# every local user can read in the process list).
PASSWORD_ENV = "SAGA_STANDIN_PASSWORD"


NO_SUCH_TRANSACTION = 251
TRANSACTION_COMMANDS = ("commitTransaction", "abortTransaction")


class Transactions:
    """Makes the stand-in's transactions all-or-nothing, as MongoDB's are.

    mongoeco 4.11 ignores ``txnNumber``. A command of a transaction the server no longer has
    (ended by the lifetime limit, or lost with a server restart) ran outside any transaction,
    and ``commitTransaction`` answered success: the writes after the break landed on their
    own, a partial commit. Here, as in MongoDB, such a command fails with NoSuchTransaction
    (labelled TransientTransactionError), so the client retries the whole transaction.

    It also runs the commands of one session one at a time, as MongoDB checks a session
    out for each command, and checks the transaction again when a command starts. A client
    task cancelled in the middle of a write closes its connection and sends abortTransaction
    on another one; without this, the abort could run between the write's decoding and its
    execution, and the write then landed outside the aborted transaction.

    It also ends transactions nobody can finish any more, because the SQLite engine runs one
    transaction at a time and every other client waits for it:

    * a transaction idle for longer than the lifetime limit is aborted, as MongoDB's
      ``transactionLifetimeLimitSeconds`` does; time the server itself was frozen does not
      count as idle, or a stall would abort transactions whose next command is waiting;
    * a transaction whose client's connection closed is aborted at once (a killed client).
      A live client that goes on over another connection gets NoSuchTransaction and retries;
    * a SQLite transaction that no client can end any more is rolled back once it has been
      seen twice, a second apart: one the engine still binds to a session that no longer
      has it open (an abort or commit that failed half-way), which makes the engine refuse
      every other command, and one bound to no session with a write scope still open, which
      makes it refuse every transaction and leave every other write uncommitted.

    A failure of one of these repairs is logged, and the reaper goes on.

    Every patch here applies only inside the stand-in server process.
    """

    def __init__(self, server: Any, lifetime: float, engine: Any = None) -> None:
        self._store = server._session_store
        self._lifetime = lifetime
        self._engine = engine  # the SQLite engine, if the server has one
        self._suspect: tuple[object, ...] | None = None  # a stuck engine state seen once
        self._open: dict[str, object] = {}  # session id -> txnNumber of its open transaction
        self._committed: dict[str, object] = {}  # session id -> txnNumber of its last commit
        self._last_used: dict[str, float] = {}  # wire session key -> end of its last command
        self._running: dict[str, int] = {}  # wire session key -> commands in progress
        self._connection: dict[str, int] = {}  # wire session key -> its last connection
        self._checked_out: dict[str, asyncio.Lock] = {}  # wire session key -> its command lock
        self._patch_sessions(type(self._store))
        self._track_commands(server._executor)
        self._watch_connections(server._connections)

    # --- transaction numbers ------------------------------------------------------------

    def _patch_sessions(self, store: Any) -> None:
        self._start_transaction = store._apply_transaction_metadata
        guard = self
        store._apply_transaction_metadata = staticmethod(self._apply)
        store.commit_transaction = lambda store_self, body: guard._commit(store_self, body)
        store.abort_transaction = lambda store_self, body: guard._abort(store_self, body)

    def _apply(self, session: Any, body: dict[str, Any]) -> None:
        """Start a transaction, or check that a command belongs to the open one."""
        if body.get("autocommit") is None or any(c in body for c in TRANSACTION_COMMANDS):
            return  # not part of a transaction (retryable writes carry a number too)
        number = body.get("txnNumber")
        if body.get("startTransaction") is True:
            if session.transaction_active:
                # The client abandoned the previous transaction of this session.
                session.abort_transaction()
            self._start_transaction(session, body)
            self._open[session.session_id] = number
        elif not self._is_open(session, number):
            raise _no_such_transaction(number)

    def _is_open(self, session: Any, number: object) -> bool:
        return bool(session.transaction_active) and self._open.get(session.session_id) == number

    def _commit(self, store: Any, body: dict[str, Any]) -> dict[str, Any]:
        session = self._session(store, body)
        number = body.get("txnNumber")
        if self._committed.get(session.session_id) == number:
            return {"ok": 1.0}  # the retry of a commit whose answer was lost
        if not self._is_open(session, number):
            raise _no_such_transaction(number)
        try:
            session.commit_transaction()
        except Exception:
            # A failed commit (a write conflict) ends the transaction, as in MongoDB.
            if session.transaction_active:
                session.abort_transaction()
            raise
        finally:
            self._open.pop(session.session_id, None)
        self._committed[session.session_id] = number
        return {"ok": 1.0}

    def _abort(self, store: Any, body: dict[str, Any]) -> dict[str, Any]:
        session = self._session(store, body)
        if self._is_open(session, body.get("txnNumber")):
            session.abort_transaction()
        return {"ok": 1.0}

    @staticmethod
    def _session(store: Any, body: dict[str, Any]) -> Any:
        try:
            return store._require_session(body)
        except Exception:
            raise _no_such_transaction(body.get("txnNumber")) from None

    # --- idle and orphaned transactions ---------------------------------------------------

    def _track_commands(self, executor: Any) -> None:
        from mongoeco.wire._session_identity import wire_session_key

        execute = executor.execute_prepared

        async def tracked(context: Any) -> Any:
            lsid = context.raw_body.get("lsid")
            if lsid is None:
                return await execute(context)
            key = wire_session_key(lsid)
            self._running[key] = self._running.get(key, 0) + 1
            self._connection[key] = context.connection.connection_id
            try:
                async with self._checked_out.setdefault(key, asyncio.Lock()):
                    self._still_in_transaction(context)
                    return await execute(context)
            finally:
                self._running[key] -= 1
                self._last_used[key] = time.monotonic()

        executor.execute_prepared = tracked

    def _still_in_transaction(self, context: Any) -> None:
        """A command of a transaction runs only while that transaction is open."""
        body = context.raw_body
        if (body.get("autocommit") is None or body.get("startTransaction") is True
                or any(c in body for c in TRANSACTION_COMMANDS) or context.session is None):
            return
        if not self._is_open(context.session, body.get("txnNumber")):
            raise _no_such_transaction(body.get("txnNumber"))

    def _watch_connections(self, registry: Any) -> None:
        close = registry.close

        def closed(connection: Any) -> None:
            close(connection)
            gone = connection.connection_id
            for key in [k for k, c in self._connection.items() if c == gone]:
                del self._connection[key]
                self._abort_idle(key, "its client's connection closed")

        registry.close = closed

    def _abort_idle(self, key: str, why: str) -> None:
        context = self._store._sessions.get(key)
        if context is None or self._running.get(key, 0) or not context.session.transaction_active:
            return
        try:
            context.session.abort_transaction()
        except Exception as e:  # the engine check below ends what this could not
            _say(f"could not abort a transaction ({why}): {e!r}")
            return
        _say(f"aborted a transaction: {why}")

    async def run_reaper(self, interval: float = 1.0) -> None:
        """Abort transactions idle longer than the lifetime limit, and release the engine
        from a transaction no session holds, checked every second."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            stalled = now - last - interval
            last = now
            try:
                self._reap(now, stalled, interval)
                await self._release_abandoned_engine()
            except Exception as e:  # a reaper that died would leave the next one for good
                _say(f"reaper: {e!r}")

    def _reap(self, now: float, stalled: float, interval: float) -> None:
        if stalled > interval:
            # The event loop was blocked: no command could arrive meanwhile.
            for key in self._last_used:
                self._last_used[key] += stalled
        for key in list(self._store._sessions):
            if now - self._last_used.get(key, now) > self._lifetime:
                self._abort_idle(key, f"idle for more than {self._lifetime:g}s")

    def _held(self, owner: object) -> bool:
        """True if the session ``owner`` has its transaction open."""
        for context in self._store._sessions.values():
            session = context.session
            if session.session_id == owner and session.active and session.transaction_active:
                return True
        return False

    async def _release_abandoned_engine(self) -> None:
        if self._engine is None:
            return
        owner, in_transaction, writing = await self._engine._run_blocking(
            _engine_state, self._engine)
        suspect = (("owner", owner) if owner is not None and not self._held(owner)
                   else ("nobody",) if owner is None and (in_transaction or writing) else None)
        if suspect is None or suspect != self._suspect:
            # Seen once: a transaction being started or ended right now looks the same.
            self._suspect = suspect
            return
        self._suspect = None
        # On the engine's own thread, so that no command runs on the connection meanwhile.
        await self._engine._run_blocking(_release_engine, self._engine, owner)


def _engine_state(engine: Any) -> tuple[object | None, bool, bool]:
    """The session the engine binds its SQLite transaction to, whether its connection is
    inside a transaction, and whether a write scope is open; read between commands (every
    write holds the engine's lock from its first statement to its last)."""
    with engine._lock:
        conn = engine._connection
        if conn is None:
            return None, False, False
        state = engine._session_runtime._write_states.get(conn)
        return (engine._transaction_owner_session_id, conn.in_transaction,
                bool(state is not None and state.frames))


def _release_engine(engine: Any, owner: object | None) -> None:
    """Roll back the engine's SQLite transaction if ``owner`` still holds it (None: if it is
    still one that no session holds), and forget its write scopes."""
    with engine._lock:
        if engine._transaction_owner_session_id != owner:
            return
        conn = engine._connection
        if conn is not None and conn.in_transaction:
            conn.rollback()
        _unbind(engine._session_runtime)
    whose = "no session held" if owner is None else "whose session no longer had it open"
    _say(f"rolled back a SQLite transaction {whose}")


def _unbind(runtime: Any) -> None:
    """Bind the engine to no session, and forget the write scopes of its connection."""
    runtime._engine._transaction_owner_session_id = None
    runtime._write_states.pop(runtime._engine._connection, None)


def _say(message: str) -> None:
    """One line on stderr, timestamped so it can be set beside a chaos run's fault log."""
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} standin: {message}", file=sys.stderr,
          flush=True)


def _no_such_transaction(number: object) -> Exception:
    from mongoeco.errors import OperationFailure

    return OperationFailure(
        f"Transaction with txnNumber {number} has been aborted or never started",
        code=NO_SUCH_TRANSACTION, details={"codeName": "NoSuchTransaction"},
        error_labels=("TransientTransactionError",))


def _guard_sqlite_transactions() -> None:
    """Fail a session's write or commit when its SQLite transaction is gone.

    The engine runs a session transaction as one SQLite transaction on its shared
    connection and wraps every write in a SAVEPOINT. If that SQLite transaction has ended
    underneath the session (seen in chaos runs: a confirm's fence update persisted while
    the writes before it were rolled back), SQLite starts a new transaction at the
    SAVEPOINT and commits it at its RELEASE: every later write of the session would land
    on its own. Here that write fails with NoSuchTransaction instead, and the client
    retries the whole transaction.
    """
    from mongoeco.engines._sqlite_session_runtime import SQLiteSessionRuntime

    begin = SQLiteSessionRuntime.begin_write
    commit = SQLiteSessionRuntime.commit_session_transaction

    def begin_write(self: Any, conn: Any, context: Any) -> None:
        if self.session_owns_transaction(context) and not conn.in_transaction:
            _lost(self, context)
        begin(self, conn, context)

    def commit_session(self: Any, session: Any) -> None:
        conn = self._engine._connection
        if (conn is not None and self._engine._transaction_owner_session_id == session.session_id
                and not conn.in_transaction):
            _lost(self, session)
        commit(self, session)

    SQLiteSessionRuntime.begin_write = begin_write  # type: ignore[method-assign]
    SQLiteSessionRuntime.commit_session_transaction = commit_session  # type: ignore[method-assign]


def _lost(runtime: Any, session: Any) -> NoReturn:
    """Release the engine from a session whose SQLite transaction ended, and fail."""
    _unbind(runtime)
    _say("a session's SQLite transaction had ended underneath it; "
         "failing it rather than committing its writes one by one")
    raise _no_such_transaction(session.transaction_number)


def _roll_back_orphans() -> None:
    """Roll back any SQLite transaction that no session owns, before a transaction begins
    and before a write outside transactions.

    Under chaos (clients killed mid-transaction, transactions reaped) mongoeco's SQLite
    engine can be left with its connection inside a transaction nobody owns. Every later
    ``BEGIN`` then fails with "cannot start a transaction within a transaction"; worse, a
    write outside transactions runs inside it as a SAVEPOINT, is acknowledged, and is
    committed by nobody, so a server restart loses it. No acknowledged write is ever in
    such a transaction (each write checks first), so rolling it back loses none.
    """
    from mongoeco.engines._sqlite_session_runtime import SQLiteSessionRuntime

    start = SQLiteSessionRuntime.start_session_transaction
    begin = SQLiteSessionRuntime.begin_write

    def start_clean(self: Any, session: Any) -> None:
        with self._engine._lock:
            _roll_back_orphan(self, self._engine._connection, "before a transaction")
        start(self, session)

    def begin_clean(self: Any, conn: Any, context: Any) -> None:
        if not self.session_owns_transaction(context):
            _roll_back_orphan(self, conn, "before a write outside transactions")
        begin(self, conn, context)

    SQLiteSessionRuntime.start_session_transaction = start_clean  # type: ignore[method-assign]
    SQLiteSessionRuntime.begin_write = begin_clean  # type: ignore[method-assign]


def _roll_back_orphan(runtime: Any, conn: Any, when: str) -> None:
    writing = runtime._write_states.get(conn) if conn is not None else None
    if (conn is not None and runtime._engine._transaction_owner_session_id is None
            and conn.in_transaction and (writing is None or not writing.frames)):
        _say(f"rolled back an orphaned SQLite transaction {when}")
        conn.rollback()


def _without_change_streams() -> None:
    """Record no change events and run no change dispatch: the stand-in serves no change
    streams, and the product reads none.

    mongoeco copies every written document into a change log and, after every write and
    every commit, takes a dispatch lease on a second SQLite connection, from the event
    loop's thread. While another session's transaction held the write lock, that lease
    waited on SQLite's busy timeout, and the whole server stopped answering for seconds
    (a ping took 14 s in a one-hour soak).
    """
    from mongoeco.core.operation_context import ChangePublicationPolicy, OperationContext
    from mongoeco.engines.adapter import EngineSpiAdapter

    create = OperationContext.create.__func__  # type: ignore[attr-defined]

    def create_unpublished(cls: Any, **kwargs: Any) -> Any:
        kwargs["publication"] = ChangePublicationPolicy.DISABLED
        return create(cls, **kwargs)

    def nothing(self: Any, sink: object | None) -> None:
        return None

    OperationContext.create = classmethod(create_unpublished)  # type: ignore[method-assign,assignment,arg-type]
    EngineSpiAdapter.prepare_change_delivery = nothing  # type: ignore[method-assign]
    EngineSpiAdapter.dispatch_committed_changes = nothing  # type: ignore[method-assign]


def patch_engine() -> None:
    """Apply every patch to mongoeco's SQLite engine (in this process only)."""
    _roll_back_orphans()
    _guard_sqlite_transactions()
    _without_change_streams()


@dataclass
class Served:
    """A running stand-in server in this process."""

    url: str
    server: Any
    engine: Any  # the SQLite engine, or None for an in-memory one
    reaper: asyncio.Task[None]

    async def close(self) -> None:
        """Stop the reaper and the server."""
        self.reaper.cancel()
        await self.server.close()


async def start(host: str, port: int, sqlite_path: str | None, user: str | None = None,
                transaction_lifetime: float = 10.0) -> Served:
    """Patch the engine and start the server (port 0: any free port)."""
    try:
        from mongoeco.engines.sqlite import SQLiteEngine
        from mongoeco.wire import AsyncMongoEcoProxyServer, WireAuthUser
    except ImportError:
        print("standin: the mongoeco package is missing "
              "(pip install 'saga-orchestrator[local]'; Python 3.13+)",
              file=sys.stderr)
        raise SystemExit(2) from None
    patch_engine()
    # One engine thread: mongoeco runs SQLite work on a pool of threads sharing one
    # connection, and under chaos runs that left its connection inside a transaction no
    # session owned, refusing every later one ("cannot start a transaction within a
    # transaction") until restarted. SQLite writes one at a time anyway.
    engine = SQLiteEngine(sqlite_path, executor_workers=1) if sqlite_path else None
    users = (WireAuthUser(user, os.environ[PASSWORD_ENV]),) if user else ()
    server = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port, auth_users=users)
    transactions = Transactions(server, transaction_lifetime, engine)
    address = await server.start()
    reaper = asyncio.create_task(transactions.run_reaper())
    return Served(f"mongodb://{address.host}:{address.port}/?directConnection=true", server,
                  engine, reaper)


async def serve(host: str, port: int, sqlite_path: str | None, user: str | None = None,
                transaction_lifetime: float = 10.0) -> None:
    """Run the server until SIGTERM/SIGINT; print its URL once listening."""
    served = await start(host, port, sqlite_path, user, transaction_lifetime)
    print(served.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await served.close()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(prog="python -m harness.standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017)
    parser.add_argument("--sqlite", metavar="PATH", help="persist to this SQLite file")
    parser.add_argument("--transaction-lifetime", type=float, default=10.0, metavar="SECONDS",
                        help="abort transactions idle this long (MongoDB's default is 60)")
    parser.add_argument("--user", help=f"require authentication as this user (password in "
                        f"${PASSWORD_ENV}; clients need authMechanism=SCRAM-SHA-256)")
    args = parser.parse_args(argv)
    if args.user and not os.environ.get(PASSWORD_ENV):
        parser.error(f"--user needs the password in ${PASSWORD_ENV}")
    asyncio.run(serve(args.host, args.port, args.sqlite, args.user, args.transaction_lifetime))
    return 0


if __name__ == "__main__":
    sys.exit(main())
