"""The rag worker: retrieve chunks, answer from them with cited chunk ids, check the citations.

Retries and the per-attempt timeout are node policies set where the graph is assembled, as for
the reasoning worker; when the last attempt fails (the store is unreachable, the collection
does not exist) the shared error handler turns the error into a failed `StepResult` and the
critic decides. Chunks stay out of graph state: the result carries only citations.
"""

import time

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from app.artifacts import ArtifactStore
from app.telemetry.tracing import CHUNKS, COLLECTION, NODE, STEP_ID, span
from nodes.artifacts import keep_sources
from nodes.context import Context
from nodes.documents import collection_for
from nodes.events import emit
from nodes.grounding import GROUNDED_AT, Passage, check_answer, extractive_answer, relabel
from nodes.llm import generate, model_config, usage_record
from nodes.prompts import (
    DEPENDENCY_BLOCK,
    EXTRACTIVE_NOTE,
    RAG_PASSAGE,
    RAG_PROMPT,
    SYSTEM_PROMPT,
)
from nodes.reasoning import WorkerUpdate
from nodes.schemas import FlaggedClaim, StepResult, StepUsage
from nodes.state import Node, WorkerInput
from retrievers.interfaces import CollectionRetriever
from retrievers.service import Library

RAG_K = 4
"""Chunks shown to the model: the small local model's context holds about this many."""


async def retrieve(
    library: Library, query: str, collection: str, *, step_id: str | None = None
) -> list[Passage]:
    """Run a hybrid search and label the hits [1], [2], … for the prompt.

    The search runs as a LangChain retriever on the node's config, so LangChain's retriever
    events (`on_retriever_end`, with the documents) report it, tagged with the step; it is
    a span of its own too.
    """
    retriever = CollectionRetriever(collection=collection, library=library, k=RAG_K)
    with span(
        f"retrieve {collection}", {COLLECTION: collection, NODE: "rag", STEP_ID: step_id}
    ) as current:
        docs = await retriever.ainvoke(query, model_config("rag", step_id))
        current.set_attribute(CHUNKS, len(docs))
    return [
        Passage(
            label=str(i),
            chunk_id=d.metadata["chunk_id"],
            source=d.metadata["source"],
            score=d.metadata["score"],
            text=d.page_content,
        )
        for i, d in enumerate(docs, 1)
    ]


def rag_worker(
    library: Library | None = None, *, artifacts: ArtifactStore | None = None
) -> Node[WorkerInput, WorkerUpdate]:
    """Return the rag worker; it searches `library` (default: the settings' database) and
    keeps each step's retrieved passages in `artifacts` (`sources.json`) when given one."""
    documents = library or Library()

    async def answer_from_documents(state: WorkerInput, runtime: Runtime[Context]) -> WorkerUpdate:
        """Run one rag step: retrieve, generate with citations, check them, fall back if
        needed."""
        return await _answer(state, runtime, documents, artifacts)

    return answer_from_documents


async def _answer(
    payload: WorkerInput,
    runtime: Runtime[Context],
    library: Library,
    artifacts: ArtifactStore | None,
) -> WorkerUpdate:
    started = time.time()
    step = payload["step"]
    context = runtime.context
    collection = await collection_for(step["instruction"], context, library)
    writer = runtime.stream_writer
    passages = await retrieve(library, step["instruction"], collection, step_id=step["id"])
    found = [
        {"chunk_id": p.chunk_id, "source": p.source, "score": p.score, "text": p.text}
        for p in passages
    ]
    emit(
        writer,
        "retrieval",
        step_id=step["id"],
        collection=collection,
        query=step["instruction"],
        chunks=len(passages),
        chunk_ids=[p.chunk_id for p in passages],
        sources=sorted({p.source for p in passages}),
        passages=found,
    )
    deps = payload["dependencies"]
    prompt = RAG_PROMPT.format(
        passages="\n\n".join(RAG_PASSAGE.format(label=p.label, text=p.text) for p in passages),
        dependencies=DEPENDENCY_BLOCK.format(
            results="\n".join(f"- [{d['step_id']}] {d['output']}" for d in deps)
        )
        if deps
        else "",
        question=step["instruction"],
    )
    generation = None
    route = context.route("rag")
    if passages:
        generation = await generate(
            [SystemMessage(SYSTEM_PROMPT), HumanMessage(prompt)],
            model=route.primary,
            fallbacks=route.fallbacks,
            writer=writer,
            node="rag",
            step_id=step["id"],
            max_tokens=context.max_output_tokens,
        )
    text = generation.text if generation else ""
    checked = check_answer(text, passages, question=step["instruction"])
    flagged = [
        FlaggedClaim(sentence=c.sentence, reason=c.flag, support=c.support, cited=c.cited)
        for c in checked.flagged
        if c.flag is not None
    ]
    extractive = False
    if checked.grounded:
        output = relabel(text, passages)
    elif passages:
        why = (
            "no citation of a retrieved passage"
            if not checked.citations
            else f"grounding {checked.grounding:.2f}"
            if checked.grounding < GROUNDED_AT
            else f"{len(flagged)} claim(s) not backed by the passage cited"
        )
        extract = extractive_answer(step["instruction"], passages)
        checked = check_answer(extract, passages)
        output = EXTRACTIVE_NOTE.format(why=why) + " " + relabel(extract, passages)
        extractive = True
    else:
        output = ""
    dropped = check_answer(text, passages).dropped
    emit(
        writer,
        "citations",
        step_id=step["id"],
        citations=checked.citations,
        dropped=dropped,
        grounding=checked.grounding,
        extractive=extractive,
        flagged=flagged,
    )
    record = usage_record(
        "rag",
        started,
        generation=generation,
        step_id=step["id"],
        attempts=runtime.execution_info.node_attempt if runtime.execution_info else 1,
    )
    result = StepResult(
        step_id=step["id"],
        kind=step["kind"],
        status="done" if output else "failed",
        output=output,
        citations=checked.citations,
        usage=StepUsage(
            input_tokens=generation.tokens.input if generation else 0,
            output_tokens=generation.tokens.output if generation else 0,
            cost=generation.cost if generation else 0.0,
        ),
        attempts=record["attempts"],
        latency_ms=record["latency_ms"],
        error=None if output else f"nothing retrieved from collection {collection!r}",
        grounding=checked.grounding,
        dropped_citations=dropped,
        extractive=extractive,
        flagged_claims=flagged,
        model=generation.model if generation else None,
        fallbacks=list(generation.fallbacks) if generation else [],
    )
    if artifacts is not None and found:
        result["artifacts"] = [await keep_sources(artifacts, step["id"], found)]
    emit(writer, "step_result", result=result)
    return WorkerUpdate(results={step["id"]: result}, usage=[record])
