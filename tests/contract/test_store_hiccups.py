"""A database hiccup delays a request; it never dead-letters a valid one.

During a failover MongoDB answers with write-concern timeouts, time limits and "interrupted
due to a replica set state change" before the new primary takes writes. Those are the real
PyMongo exceptions here, raised through the same translation the MongoDB adapters use, by a
store that fails three times and then works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pymongo.errors import (
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from engine.state import SagaState
from infra.adapters.mongo import translated
from infra.errors import StoreFailed, StoreUnavailable, VersionConflict
from orchestrator.registry import DefinitionRegistry
from orchestrator.store import OutboxMessage
from orchestrator.store_memory import MemorySagaStore
from tests.contract.test_requests import LINE, TOPOLOGY, serving

FAILOVER: list[PyMongoError] = [
    WriteConcernError("waiting for replication timed out", 64,
                      {"code": 64, "errmsg": "waiting for replication timed out"}),
    ExecutionTimeout("operation exceeded time limit", 50),
    OperationFailure("interrupted due to repl state change", 11602,
                     {"errorLabels": ["RetryableWriteError"]}),
]


class FailingOver(MemorySagaStore):
    """A saga store whose first writes fail as MongoDB does during a failover."""

    def __init__(self, registry: DefinitionRegistry) -> None:
        super().__init__(registry)
        self.failures = list(FAILOVER)

    async def create(self, state: SagaState[Any], outbox: Sequence[OutboxMessage]) -> bool:
        """Fail with the next failover error, then store."""
        if self.failures:
            with translated():
                raise self.failures.pop(0)
        return await super().create(state, outbox)


async def test_a_valid_order_survives_a_failover_and_starts_its_saga() -> None:
    async with serving(FailingOver) as orchestrator:
        await orchestrator.send({"order_id": "o-1", "customer_id": "c1", "items": [LINE]})
        assert isinstance(orchestrator.store, FailingOver)
        assert orchestrator.store.failures == []
        assert await orchestrator.dead() == []
        [saga] = await orchestrator.store.find(None, 10)
        assert saga.state.saga_id == "order:o-1"
        command = await orchestrator.publisher.get(TOPOLOGY.command_queue("order"))
        assert command is not None
        assert command.type == "order.create"


@pytest.mark.parametrize("error", [
    *FAILOVER,
    OperationFailure("not primary", 10107),
    OperationFailure("primary stepped down", 189),
    OperationFailure("write concern", 2, {"writeConcernError": {"code": 64}}),
    OperationFailure("commit outcome unknown", 50,
                     {"errorLabels": ["UnknownTransactionCommitResult"]}),
], ids=lambda e: f"{type(e).__name__}-{getattr(e, 'code', None)}")
def test_errors_marked_transient_by_mongodb_are_retryable(error: PyMongoError) -> None:
    with pytest.raises(StoreUnavailable), translated():
        raise error


def test_a_write_conflict_is_a_version_conflict() -> None:
    with pytest.raises(VersionConflict), translated():
        raise OperationFailure("WriteConflict", 112)


@pytest.mark.parametrize("error", [
    OperationFailure("BadValue", 2),
    OperationFailure("Unauthorized", 13),
    WriteConcernError("unsatisfiable write concern", 100, {"code": 100}),
], ids=lambda e: f"{type(e).__name__}-{getattr(e, 'code', None)}")
def test_other_server_errors_are_not_retried(error: PyMongoError) -> None:
    with pytest.raises(StoreFailed), translated():
        raise error
