"""The LangGraph Agent API on agentgraph's own threads: what `langgraph_sdk`, `RemoteGraph`
and LangGraph Studio call (`/assistants/*`, `/threads/*`, `/runs/*`, `/info`), served over
the Postgres checkpoints, thread locks and run driver every other surface uses."""

from fastapi import APIRouter

from server.agent_api import assistants, runs, threads

router = APIRouter()
router.include_router(assistants.router)
router.include_router(threads.router)
router.include_router(runs.router)
