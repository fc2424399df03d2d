"""The MongoDB stand-in keeps a transaction all-or-nothing, whatever ends it half-way.

MongoDB answers a command that belongs to a transaction it no longer has (aborted by its
lifetime limit, or lost with a restart) with NoSuchTransaction. mongoeco ran such a command
outside any transaction instead, so the writes after the break landed on their own: a
partial commit. These tests break a transaction in the middle, finish it from the client,
and check that none of its writes is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, PyMongoError

from harness.chaos.faults import serves_in_time
from harness.processes import start_standin

ROOT = Path(__file__).resolve().parents[2]

Client = AsyncMongoClient[dict[str, Any]]


async def _client(url: str) -> Client:
    client: Client = AsyncMongoClient(url, serverSelectionTimeoutMS=10_000)
    await client.admin.command("ping")
    return client


@pytest.fixture
async def reaping_standin(tmp_path: Path) -> AsyncIterator[str]:
    """A stand-in that reaps transactions idle for one second."""
    process, url = await start_standin(tmp_path, extra_args=("--transaction-lifetime", "1"))
    try:
        yield url
    finally:
        process.stop()


async def _finish(client: Client, collection: str, first: str, second: str,
                  between: Any) -> PyMongoError | None:
    """Insert ``first`` and ``second`` in one transaction, calling ``between`` in between;
    returns the error that ended the transaction, if any."""
    coll = client["atomic"][collection]
    try:
        async with client.start_session() as session, await session.start_transaction():
            await coll.insert_one({"_id": first}, session=session)
            await between()
            await coll.insert_one({"_id": second}, session=session)
    except PyMongoError as e:
        return e
    return None


async def test_a_reaped_transaction_commits_nothing(reaping_standin: str) -> None:
    """The reaper aborts the idle transaction; the write after it and the commit must fail
    rather than land outside the transaction."""
    client = await _client(reaping_standin)
    try:
        error = await _finish(client, "reaped", "a", "b", lambda: asyncio.sleep(3.0))
        assert error is not None, "the transaction committed after it had been aborted"
        assert isinstance(error, OperationFailure), error
        assert error.code == 251, error
        assert error.has_error_label("TransientTransactionError")
        assert await client["atomic"]["reaped"].count_documents({}) == 0
    finally:
        await client.close()


async def test_a_transaction_cut_by_a_server_restart_commits_nothing(tmp_path: Path) -> None:
    """The server is killed between two writes of a transaction and comes back with its
    data file: the second write must not start a life of its own on the new server."""
    process, url = await start_standin(tmp_path, sqlite_path=tmp_path / "db.sqlite")
    client = await _client(url)

    async def restart() -> None:
        process.kill()
        process.start()
        await process.wait_ready(30.0)

    try:
        error = await _finish(client, "restarted", "a", "b", restart)
        assert error is not None, "the transaction went on across a server restart"
        assert await client["atomic"]["restarted"].count_documents({}) == 0
    finally:
        await client.close()
        process.stop()


async def test_an_abort_racing_a_write_of_the_same_transaction_leaves_nothing(
        tmp_path: Path) -> None:
    """A client task cancelled during a write closes that connection and aborts on another
    one, so the abort can reach the server while the write is still on its way. The write
    must then fail, not land outside the aborted transaction (it did, 158 times in 200)."""
    process, url = await start_standin(tmp_path, sqlite_path=tmp_path / "db.sqlite")
    client = await _client(url)
    coll = client["atomic"]["raced"]

    async def quietly(operation: Awaitable[Any]) -> None:
        with contextlib.suppress(PyMongoError):
            await operation

    try:
        for i in range(40):
            session = client.start_session()
            await session.start_transaction()
            await coll.insert_one({"_id": f"first-{i}"}, session=session)
            await asyncio.gather(
                quietly(coll.insert_one({"_id": f"raced-{i}", "pad": "x" * 2000},
                                        session=session)),
                quietly(session.abort_transaction()))
            await session.end_session()
        assert await coll.distinct("_id") == []
    finally:
        await client.close()
        process.stop()


async def test_a_repeated_commit_of_a_committed_transaction_succeeds(
        reaping_standin: str) -> None:
    """The driver retries a commit whose answer was lost; MongoDB answers it with success,
    and so must the stand-in (an error would make the caller redo committed work)."""
    client = await _client(reaping_standin)
    try:
        async with client.start_session() as session:
            await session.start_transaction()
            await client["atomic"]["commits"].insert_one({"_id": "a"}, session=session)
            await session.commit_transaction()
            await session.commit_transaction()
        assert await client["atomic"]["commits"].count_documents({}) == 1
    finally:
        await client.close()


HOLDER = """
import asyncio, sys
from pymongo import AsyncMongoClient

async def main():
    client = AsyncMongoClient(sys.argv[1])
    session = client.start_session()
    await session.start_transaction()
    await client["atomic"]["slot"].insert_one({"_id": "held"}, session=session)
    print("holding", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_client_frees_the_transaction_slot(tmp_path: Path) -> None:
    """The stand-in's SQLite engine runs one transaction at a time. A client killed inside its transaction
    must not block every other client until the lifetime limit (here 60 s): its
    transaction ends when its connection does, and none of its writes remain."""
    process, url = await start_standin(tmp_path, sqlite_path=tmp_path / "db.sqlite",
                                       extra_args=("--transaction-lifetime", "60"))
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, url, stdout=asyncio.subprocess.PIPE)
    other = await _client(url)
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 30)).strip() == b"holding"
        holder.kill()  # SIGKILL: no endSessions, no abort; only its sockets close
        await holder.wait()
        async with asyncio.timeout(20):
            while True:
                try:
                    async with other.start_session() as s, await s.start_transaction():
                        await other["atomic"]["slot"].insert_one({"_id": "next"}, session=s)
                    break
                except OperationFailure:
                    await asyncio.sleep(0.2)
        assert await other["atomic"]["slot"].distinct("_id") == ["next"]
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await other.close()
        process.stop()


async def test_writes_outside_transactions_still_work(reaping_standin: str) -> None:
    """Retryable writes carry a transaction number too; they are not transactions."""
    client = await _client(reaping_standin)
    try:
        coll = client["atomic"]["plain"]
        await coll.insert_one({"_id": "a"})
        await coll.update_one({"_id": "a"}, {"$set": {"n": 1}})
        assert await coll.find_one({"_id": "a"}) == {"_id": "a", "n": 1}
    finally:
        await client.close()


async def test_acknowledged_writes_survive_a_sigkill(tmp_path: Path) -> None:
    """Every acknowledged write is in the file when the server is killed: plain writes,
    updates and transactions."""
    process, url = await start_standin(tmp_path, sqlite_path=tmp_path / "db.sqlite")
    try:
        client = await _client(url)
        try:
            coll = client["atomic"]["durable"]
            for n in range(20):
                await coll.insert_one({"_id": f"plain-{n}", "v": 0})
                await coll.update_one({"_id": f"plain-{n}"}, {"$set": {"v": 1}})
                async with client.start_session() as session, await session.start_transaction():
                    await coll.insert_one({"_id": f"tx-{n}", "v": 1}, session=session)
                    await coll.update_one({"_id": f"plain-{n}"}, {"$inc": {"v": 1}},
                                          session=session)
        finally:
            await client.close()
        process.kill()
        process.start()
        await process.wait_ready(30.0)
        client = await _client(url)
        try:
            coll = client["atomic"]["durable"]
            assert await coll.count_documents({}) == 40
            assert await coll.count_documents({"v": 2}) == 20  # every plain doc, both updates
            assert await coll.count_documents({"_id": {"$regex": "^tx-"}, "v": 1}) == 20
        finally:
            await client.close()
    finally:
        process.stop()


async def test_writes_leave_no_change_log_and_take_no_dispatch_lease(tmp_path: Path) -> None:
    """The stand-in serves no change streams. mongoeco's change log recorded every write and
    took a dispatch lease on a second SQLite connection after each write and commit, from
    the event loop's thread: the source of the server-wide stalls under load."""
    db = tmp_path / "changes.sqlite"
    process, url = await start_standin(tmp_path, sqlite_path=db)
    try:
        client = await _client(url)
        try:
            coll = client["atomic"]["logged"]
            await coll.insert_one({"_id": "plain"})
            await coll.update_one({"_id": "plain"}, {"$set": {"n": 1}})
            async with client.start_session() as session, await session.start_transaction():
                await coll.insert_one({"_id": "in-transaction"}, session=session)
            assert await coll.count_documents({}) == 2
            # Read while the server runs: it drops its dispatch consumer when it stops.
            with contextlib.closing(sqlite3.connect(db)) as conn:
                logged = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                          for t in ("change_outbox", "change_outbox_identities",
                                    "change_outbox_consumers")}
        finally:
            await client.close()
    finally:
        process.stop()
    assert logged == dict.fromkeys(logged, 0)


# A write outside transactions, with the engine's connection left inside a SQLite transaction
# no session owns (here opened by a bare statement; under chaos by whatever left one), then
# the process dies without any cleanup, as under SIGKILL.
_STRAY_TRANSACTION = """
import os, sys
from mongoeco import MongoClient
from mongoeco.engines.sqlite import SQLiteEngine
from harness import standin
standin.patch_engine()
engine = SQLiteEngine(sys.argv[1], executor_workers=1)
coll = MongoClient(engine=engine)["atomic"]["stray"]
coll.insert_one({"_id": "before"})
engine._connection.execute("DELETE FROM mongoeco_schema_migrations WHERE component = 'none'")
assert engine._connection.in_transaction
coll.insert_one({"_id": "acknowledged"})
os._exit(0)
"""


async def test_a_write_is_durable_even_inside_a_stray_sqlite_transaction(
        tmp_path: Path) -> None:
    """mongoeco runs a write outside transactions as a SAVEPOINT when its connection is
    already inside a transaction: acknowledged, yet committed by nobody, and lost when the
    server dies. The stand-in rolls such a stray transaction back first."""
    db = tmp_path / "stray.sqlite"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _STRAY_TRANSACTION, str(db), cwd=ROOT)
    assert await child.wait() == 0
    process, url = await start_standin(tmp_path, sqlite_path=db)
    try:
        client = await _client(url)
        try:
            found = await client["atomic"]["stray"].distinct("_id")
        finally:
            await client.close()
    finally:
        process.stop()
    assert sorted(found) == ["acknowledged", "before"]


# A stand-in in this child process, its engine left stuck in a SQLite transaction that
# nobody can end: bound to a session that has none open ("owner", as an abort or commit that
# failed half-way leaves it), or bound to no session with a write scope still open
# ("nobody"). Either way every transaction is refused while it stays. Prints how long until
# a transaction went through.
_STUCK_ENGINE = """
import asyncio, sys, time
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from mongoeco.engines._sqlite_session_runtime import _WriteState
from harness import standin

async def main():
    served = await standin.start("127.0.0.1", 0, sys.argv[1], transaction_lifetime=1.0)
    client = AsyncMongoClient(served.url, serverSelectionTimeoutMS=5000)
    coll = client["atomic"]["stuck"]
    await coll.insert_one({"_id": "before"})
    engine = served.engine
    def stick():
        engine._connection.execute("BEGIN")
        if sys.argv[3] == "owner":
            engine._transaction_owner_session_id = "a session that is gone"
        else:
            states = engine._session_runtime._write_states
            states.setdefault(engine._connection, _WriteState()).frames.append(None)
    await engine._run_blocking(stick)
    began = time.monotonic()
    while time.monotonic() - began < float(sys.argv[2]):
        try:
            async with client.start_session() as session, await session.start_transaction():
                await coll.insert_one({"_id": "after"}, session=session)
        except PyMongoError:
            await asyncio.sleep(0.2)
            continue
        print(f"committed after {time.monotonic() - began:.1f}s")
        break
    else:
        print("never committed")
    await client.close()
    await served.close()

asyncio.run(main())
"""


@pytest.mark.parametrize(("bound_to", "logged"), [
    ("owner", "rolled back a SQLite transaction whose session no longer had it open"),
    ("nobody", "rolled back a SQLite transaction no session held"),
])
async def test_a_sqlite_transaction_nobody_can_end_is_rolled_back(
        tmp_path: Path, bound_to: str, logged: str) -> None:
    """A SQLite transaction that no client can end would refuse every transaction for good:
    the reaper rolls it back within seconds."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _STUCK_ENGINE, str(tmp_path / "stuck.sqlite"), "20", bound_to,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    assert out.decode().startswith("committed after"), out.decode() + err.decode()
    assert logged in err.decode()


async def test_the_chaos_probe_fails_a_standin_that_answers_pings_but_serves_nothing(
        tmp_path: Path) -> None:
    """`sagactl chaos` restarts a stand-in its probe fails three times in a row: the probe
    reads, because a stuck engine still answers pings. (The SQLite engine, as in chaos
    runs: while one transaction is open it refuses every other session's command, so one
    held open stands in for a stuck one.)"""
    process, url = await start_standin(tmp_path, sqlite_path=tmp_path / "probe.sqlite")
    client = await _client(url)
    try:
        assert await serves_in_time(process.port)
        async with client.start_session() as session, await session.start_transaction():
            await client["atomic"]["held"].insert_one({"_id": "held"}, session=session)
            assert (await client.admin.command("ping"))["ok"] == 1.0
            assert not await serves_in_time(process.port, within=1.0)
        assert await serves_in_time(process.port)
    finally:
        await client.close()
        process.stop()
