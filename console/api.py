"""The console's JSON API over the saga store and the admin queue (docs/console.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from catalog.mermaid import flowchart
from client import status
from client.definitions import describe
from contracts.admin import Action, AdminAction, AdminResult
from contracts.envelope import describe as describe_error
from contracts.errors import SagaSystemError
from engine.state import SagaStatus
from orchestrator.registry import DefinitionRegistry
from orchestrator.store import SagaQuery, SagaRecord, SagaStore

# What the buttons offer in each state; the orchestrator still decides (and may refuse:
# a cancel that crosses the commit point, a second operator who was faster).
ACTIONS_BY_STATUS = {
    SagaStatus.RUNNING: (Action.CANCEL,),
    SagaStatus.NEEDS_ATTENTION: (Action.RETRY, Action.RESOLVE),
}
MAX_PAGE = 500


class Actions(Protocol):
    """Sends one action to the orchestrator and waits for its answer (client.admin)."""

    async def ask(self, request: AdminAction, timeout: float) -> AdminResult | None:
        """The answer, or None when none came within ``timeout``."""
        ...


@dataclass(frozen=True, slots=True)
class Backend:
    """What the API reads and where it sends actions."""

    sagas: SagaStore
    registry: DefinitionRegistry
    actions: Actions
    action_timeout: float
    page_size: int


class BadQuery(SagaSystemError, ValueError):
    """A query parameter or body that cannot be used; the message says which and why."""


def error(code: int, message: str) -> JSONResponse:
    """Every error answer has the same shape."""
    return JSONResponse({"error": message}, status_code=code)


def summary(record: SagaRecord) -> dict[str, Any]:
    """One saga as a row of the list."""
    j = status.as_json(record)
    current = next((s for s in reversed(j["steps"]) if s["status"] in ("waiting", "backoff")),
                   None)
    return {"saga_id": j["saga_id"], "definition": j["definition"],
            "definition_version": j["definition_version"], "status": j["status"],
            "reason_code": j["failure"]["reason_code"] if j["failure"] else None,
            "attention": j["attention"], "created_at": j["created_at"],
            "updated_at": j["updated_at"],
            "current": f"{current['step']} ({current['operation']})" if current else None}


def detail(record: SagaRecord, registry: DefinitionRegistry) -> dict[str, Any]:
    """One saga with its steps, history, graph (coloured by live state) and the actions
    its state allows."""
    state = record.state
    definition = registry.get(state.definition, state.definition_version)
    states = {key: op.status.value for key, op in state.ops.items()}
    return {**status.as_json(record), "graph": flowchart(definition, states),
            "actions": [a.value for a in ACTIONS_BY_STATUS.get(state.status, ())]}


def parse_query(params: dict[str, str], page_size: int) -> SagaQuery:
    """The list's filters, from the query string."""
    statuses = None
    if raw := params.get("status"):
        try:
            statuses = frozenset(SagaStatus(s) for s in raw.split(",") if s)
        except ValueError as e:
            raise BadQuery(f"status: one of {', '.join(s.value for s in SagaStatus)}") from e
    since = None
    if raw := params.get("since"):
        try:
            since = datetime.fromisoformat(raw).timestamp()
        except ValueError as e:
            raise BadQuery("since: an ISO 8601 time, e.g. 2026-12-04T10:00:00+00:00") from e
    after = None
    if raw := params.get("after"):
        at, sep, last = raw.partition("|")
        try:
            after = (float(at), last) if sep and last else None
        except ValueError:
            after = None
        if after is None:
            raise BadQuery("after: the 'next' value of the previous page")
    try:
        limit = int(params.get("limit", page_size))
    except ValueError as e:
        raise BadQuery("limit: a whole number") from e
    if not 1 <= limit <= MAX_PAGE:
        raise BadQuery(f"limit: between 1 and {MAX_PAGE}")
    return SagaQuery(statuses=statuses, definition=params.get("definition") or None,
                     since=since, text=(params.get("q") or "").strip() or None, after=after,
                     limit=limit)


class Api:
    """The routes, bound to a backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def routes(self) -> list[Route]:
        """Every API route."""
        return [Route("/api/sagas", self.list_sagas),
                Route("/api/sagas/{ident:path}/{action:str}", self.act, methods=["POST"]),
                Route("/api/sagas/{ident:path}", self.saga),
                Route("/api/definitions", self.definitions)]

    async def list_sagas(self, request: Request) -> JSONResponse:
        """``GET /api/sagas?status=&definition=&since=&q=&after=&limit=``."""
        try:
            query = parse_query(dict(request.query_params), self.backend.page_size)
        except BadQuery as e:
            return error(400, str(e))
        found = await self.backend.sagas.search(query)
        last = found[-1].state if len(found) == query.limit else None
        return JSONResponse({"sagas": [summary(r) for r in found],
                             "next": f"{last.created_at!r}|{last.saga_id}" if last else None})

    async def saga(self, request: Request) -> JSONResponse:
        """``GET /api/sagas/{id}``: an id, or a business key only one definition uses."""
        try:
            record = await status.lookup(self.backend.sagas, request.path_params["ident"])
        except status.NotFound as e:
            return error(404, str(e))
        return JSONResponse(detail(record, self.backend.registry))

    async def definitions(self, request: Request) -> JSONResponse:
        """``GET /api/definitions``: every registered definition and version."""
        return JSONResponse([describe(d) for d in self.backend.registry.all()])

    async def act(self, request: Request) -> JSONResponse:
        """``POST /api/sagas/{id}/cancel|retry|resolve`` with ``{"operator", "note"}``."""
        try:
            action = Action(request.path_params["action"])
        except ValueError:
            return error(404, f"no action {request.path_params['action']!r}: "
                              "cancel, retry or resolve")
        try:
            body = await _body(request)
            record = await status.lookup(self.backend.sagas, request.path_params["ident"])
            if action is Action.RESOLVE and not str(body.get("note", "")).strip():
                raise BadQuery("resolve needs a note: what was repaired, and how")
            ask = AdminAction(saga_id=record.state.saga_id, action=action,
                              operator=body.get("operator") or "console",
                              note=str(body.get("note", ""))[:500])
        except status.NotFound as e:
            return error(404, str(e))
        except BadQuery as e:
            return error(400, str(e))
        except ValidationError as e:
            return error(400, describe_error(e))
        result = await self.backend.actions.ask(ask, self.backend.action_timeout)
        if result is None:
            return error(504, f"no answer from the orchestrator within "
                              f"{self.backend.action_timeout:.0f}s")
        answer = result.model_dump(mode="json")
        return JSONResponse(answer, status_code=200 if result.accepted else 409)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadQuery("the body is not JSON") from e
    if not isinstance(body, dict):
        raise BadQuery('the body is a JSON object: {"operator": ..., "note": ...}')
    return body

