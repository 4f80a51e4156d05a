"""Assistants: one per graph (`agent`), as LangGraph's server makes one per graph at start,
with the graph's drawing and its schemas; and `/info`."""

from datetime import UTC, datetime
from importlib import metadata
from typing import Annotated, Any
from uuid import UUID, uuid5

import langgraph.version
from fastapi import APIRouter, Body, Path, Query

from app.errors import AssistantNotFoundError
from server.auth import Caller, needs
from server.routes_runs import ERRORS, Svc

router = APIRouter(tags=["LangGraph Agent API"])
AssistantId = Annotated[str, Path(min_length=1, max_length=200)]

GRAPH_ID = "agent"
NAMESPACE_GRAPH = UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
"""LangGraph's namespace of assistant ids: the graph's assistant has the id it has there."""
ASSISTANT_ID = str(uuid5(NAMESPACE_GRAPH, GRAPH_ID))
STARTED = datetime.now(UTC).isoformat()


def resolve(assistant_id: str) -> str:
    """The graph an assistant id (or a graph id, which clients may pass instead) names.

    Raises:
        AssistantNotFoundError: neither.
    """
    if assistant_id not in (ASSISTANT_ID, GRAPH_ID):
        raise AssistantNotFoundError(assistant_id, GRAPH_ID)
    return GRAPH_ID


def assistant() -> dict[str, Any]:
    """The graph's assistant."""
    return {
        "assistant_id": ASSISTANT_ID,
        "graph_id": GRAPH_ID,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "name": GRAPH_ID,
        "description": "The agentgraph plan-and-execute agent.",
        "version": 1,
        "created_at": STARTED,
        "updated_at": STARTED,
    }


@router.get("/info")
async def info() -> dict[str, Any]:
    """The server's version and what it supports, as LangGraph Studio reads it."""
    return {
        "version": metadata.version("agentgraph"),
        "langgraph_py_version": langgraph.version.__version__,
        "flags": {"assistants": True, "crons": False, "langsmith": False},
        "host": {"kind": "agentgraph"},
    }


@router.post("/assistants/search", responses=ERRORS)
async def search(
    who: Caller, body: Annotated[dict[str, Any] | None, Body()] = None
) -> list[dict[str, Any]]:
    """The assistants whose graph id and metadata match: the one of the graph, or none."""
    needs(who, "runs")
    query = body or {}
    found = assistant()
    if query.get("graph_id") not in (None, GRAPH_ID):
        return []
    wanted = query.get("metadata") or {}
    if any(found["metadata"].get(k) != v for k, v in wanted.items()):
        return []
    return [found] if int(query.get("offset") or 0) == 0 else []


@router.post("/assistants/count", responses=ERRORS)
async def count(who: Caller, body: Annotated[dict[str, Any] | None, Body()] = None) -> int:
    """How many assistants `search` finds."""
    return len(await search(who, {**(body or {}), "offset": 0}))


@router.get("/assistants/{assistant_id}", responses=ERRORS)
async def get(assistant_id: AssistantId, who: Caller) -> dict[str, Any]:
    """The assistant."""
    needs(who, "runs")
    resolve(assistant_id)
    return assistant()


@router.post("/assistants/{assistant_id}/versions", responses=ERRORS)
async def versions(assistant_id: AssistantId, who: Caller) -> list[dict[str, Any]]:
    """The assistant's versions: the one there is."""
    return [await get(assistant_id, who)]


@router.get("/assistants/{assistant_id}/graph", responses=ERRORS)
async def graph(
    assistant_id: AssistantId,
    svc: Svc,
    who: Caller,
    xray: Annotated[int | bool, Query(description="Subgraph depth to draw.")] = False,
) -> dict[str, Any]:
    """The graph's nodes and edges, as Studio draws them."""
    needs(who, "runs")
    resolve(assistant_id)
    drawn: dict[str, Any] = svc.graph.get_graph(xray=xray).to_json()
    return drawn


@router.get("/assistants/{assistant_id}/schemas", responses=ERRORS)
async def schemas(assistant_id: AssistantId, svc: Svc, who: Caller) -> dict[str, Any]:
    """The graph's input, output, state, config and context (run options) schemas."""
    needs(who, "runs")
    resolve(assistant_id)
    g = svc.graph
    return {
        "graph_id": GRAPH_ID,
        "input_schema": g.get_input_jsonschema(),
        "output_schema": g.get_output_jsonschema(),
        "state_schema": g.get_output_jsonschema(),
        # Run options are the context (LangGraph 1 deprecates configurable for them).
        "config_schema": {"title": "Configurable", "type": "object", "properties": {}},
        "context_schema": g.get_context_jsonschema(),
    }


@router.get("/assistants/{assistant_id}/subgraphs", responses=ERRORS)
@router.get("/assistants/{assistant_id}/subgraphs/{namespace}", responses=ERRORS)
async def subgraphs(
    assistant_id: AssistantId, who: Caller, namespace: str | None = None
) -> dict[str, Any]:
    """The graph's subgraphs' schemas: it has none."""
    needs(who, "runs")
    resolve(assistant_id)
    return {}
