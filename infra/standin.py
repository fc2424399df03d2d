"""A MongoDB stand-in: the mongoeco wire-protocol server, in its own process.

Where no MongoDB server exists (these build machines), the real PyMongo driver talks to
this over TCP. It supports transactions and unique indexes, not change streams, and its
speed says nothing about MongoDB's. ``python -m infra.standin --port 27017``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

# The password of --user comes from the environment, never from the command line (which
# every local user can read in the process list).
PASSWORD_ENV = "SAGA_STANDIN_PASSWORD"


def _end_failed_transactions() -> None:
    """Make a failed commit end its transaction, as MongoDB does.

    mongoeco 4.11 leaves the transaction of a session open when its commit fails (a write
    conflict), and the next ``startTransaction`` on that server session silently continues
    it. PyMongo pools server sessions, so the next transaction of the same client would see
    the failed one's writes and fail forever. This patch only runs inside the stand-in
    server process.
    """
    from mongoeco.wire.sessions import WireSessionStore

    commit = WireSessionStore.commit_transaction
    apply_metadata = WireSessionStore._apply_transaction_metadata

    def commit_or_abort(self: WireSessionStore, body: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = commit(self, body)
        except Exception:
            session = self._require_session(body)
            if session.transaction_active:
                session.abort_transaction()
            raise
        return result

    def fresh_start(session: Any, body: dict[str, Any]) -> None:
        if body.get("startTransaction") is True and session.transaction_active:
            session.abort_transaction()
        apply_metadata(session, body)

    _roll_back_orphans()
    WireSessionStore.commit_transaction = commit_or_abort  # type: ignore[method-assign]
    WireSessionStore._apply_transaction_metadata = staticmethod(fresh_start)  # type: ignore[method-assign]


class TransactionReaper:
    """Aborts transactions idle for longer than a lifetime limit, as MongoDB does
    (``transactionLifetimeLimitSeconds``). Without it, a client killed in the middle of a
    transaction would hold the SQLite engine's single transaction slot forever.

    Idle means no command of the session is running: a transaction whose command is slow
    (a large write under load) must not be aborted under its feet, or part of its writes
    would land outside the transaction.
    """

    def __init__(self, server: Any, lifetime: float) -> None:
        from mongoeco.wire._session_identity import wire_session_key

        self._sessions = server._session_store
        self._lifetime = lifetime
        self._last_used: dict[str, float] = {}
        self._running: dict[str, int] = {}
        executor = server._executor
        execute = executor.execute_prepared

        async def tracked(context: Any) -> Any:
            lsid = context.raw_body.get("lsid")
            key = None if lsid is None else wire_session_key(lsid)
            if key is not None:
                self._running[key] = self._running.get(key, 0) + 1
            try:
                return await execute(context)
            finally:
                if key is not None:
                    self._running[key] -= 1
                    self._last_used[key] = time.monotonic()

        executor.execute_prepared = tracked

    async def run(self) -> None:
        """Check every second."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for key, context in list(self._sessions._sessions.items()):
                if self._running.get(key, 0) or not context.session.transaction_active:
                    continue
                if now - self._last_used.get(key, now) > self._lifetime:
                    context.session.abort_transaction()


def _roll_back_orphans() -> None:
    """Before a transaction begins, roll back any SQLite transaction that no session owns.

    Under chaos (clients killed mid-transaction, transactions reaped) mongoeco's SQLite
    engine can be left with its connection inside a transaction nobody owns; every later
    ``BEGIN`` then fails with "cannot start a transaction within a transaction".
    """
    from mongoeco.engines._sqlite_session_runtime import SQLiteSessionRuntime

    start = SQLiteSessionRuntime.start_session_transaction

    def start_clean(self: Any, session: Any) -> None:
        engine = self._engine
        with engine._lock:
            conn = engine._connection
            writing = self._write_states.get(conn) if conn is not None else None
            if (conn is not None and engine._transaction_owner_session_id is None
                    and conn.in_transaction and (writing is None or not writing.frames)):
                print("standin: rolled back an orphaned SQLite transaction", file=sys.stderr)
                conn.rollback()
        start(self, session)

    SQLiteSessionRuntime.start_session_transaction = start_clean  # type: ignore[method-assign]


async def serve(host: str, port: int, sqlite_path: str | None, user: str | None = None,
                transaction_lifetime: float = 10.0) -> None:
    """Run the server until SIGTERM/SIGINT; print its URL once listening."""
    try:
        from mongoeco.engines.sqlite import SQLiteEngine
        from mongoeco.wire import AsyncMongoEcoProxyServer, WireAuthUser
    except ImportError:
        print("standin: the mongoeco package is missing (pip install mongoeco; Python 3.13+)",
              file=sys.stderr)
        raise SystemExit(2) from None
    _end_failed_transactions()
    engine = SQLiteEngine(sqlite_path) if sqlite_path else None
    users = (WireAuthUser(user, os.environ[PASSWORD_ENV]),) if user else ()
    server = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port, auth_users=users)
    address = await server.start()
    reaper = asyncio.create_task(
        TransactionReaper(server, transaction_lifetime).run())
    print(f"mongodb://{address.host}:{address.port}/?directConnection=true", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    reaper.cancel()
    await server.close()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(prog="python -m infra.standin", description=__doc__)
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
