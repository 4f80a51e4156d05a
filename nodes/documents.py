"""Which steps answer from the user's documents.

A run that names a collection answers every step from it. Otherwise, when the graph has a
library, each reasoning step whose instruction is close enough to a chunk of an ingested
collection (cosine similarity of the step and its closest chunk at least the library's
`match_threshold`; only collections sharing a word with the step are compared) becomes a rag
step; the rag worker searches the closest collection.
"""

import logging

from app.errors import AgentGraphError
from nodes.context import Context
from nodes.plans import use_documents
from nodes.schemas import Plan, Step
from retrievers.service import Library, Match

logger = logging.getLogger(__name__)


async def with_documents(
    plan: Plan, context: Context, library: Library | None
) -> tuple[Plan, str | None]:
    """Return the plan with its document steps made rag steps, and a note saying why.

    A failure to look at the collections (the store unreachable, the embedding model missing)
    leaves the plan as it is, with the reason in the note: the run goes on without documents.
    """
    if context.collection is not None:
        return use_documents(plan, context.collection), None
    if library is None or not context.documents:
        return plan, None
    candidates = [s for s in plan["steps"] if s["kind"] == "reasoning"]
    try:
        matches = await library.match([s["instruction"] for s in candidates])
    except AgentGraphError as exc:
        logger.warning("document match skipped: %s", exc)
        return plan, f"documents not consulted: {exc}"
    matched = {s["id"]: m for s, m in zip(candidates, matches, strict=True) if m is not None}
    if not matched:
        return plan, None
    steps = [Step(**{**s, "kind": "rag"}) if s["id"] in matched else s for s in plan["steps"]]
    return Plan(goal=plan["goal"], steps=steps), _note(matched)


def _note(matched: dict[str, Match]) -> str:
    parts = [
        f"{step_id} answers from collection {m.collection!r} (similarity {m.similarity:.2f})"
        for step_id, m in matched.items()
    ]
    return "; ".join(parts)


async def collection_for(instruction: str, context: Context, library: Library) -> str:
    """The collection a rag step searches: the run's, else the closest one, else the default."""
    if context.collection is not None:
        return context.collection
    [match] = await library.match([instruction], threshold=0.0)
    return match.collection if match is not None else library.default_collection
