"""A whole graph run with a rag step: real local model, real embeddings, real Postgres."""

import uuid
from pathlib import Path

from app.settings import Settings
from graphs.agent import compile_graph
from graphs.runs import RunEvent, stream_events
from graphs.service import Agent
from graphs.threads import view_thread
from nodes.context import Context
from retrievers.ingest import ingest
from retrievers.service import Library, open_collection

DOCS = {
    "pandas.md": "# Giant pandas\n\nThe giant panda eats bamboo almost exclusively. An adult "
    "eats about twelve kilograms of bamboo a day. Pandas live in the mountains of China.\n",
    "tea.md": "# Green tea\n\nGreen tea is rich in catechins. It is made from unoxidised "
    "leaves of Camellia sinensis.\n",
    "postgres.md": "# PostgreSQL\n\nPostgreSQL stores rows in heap pages. The pgvector "
    "extension adds HNSW indexes for nearest-neighbour search.\n",
}


async def _events(agent: Agent, thread_id: str, context: Context, request: str) -> list[RunEvent]:
    return [
        e
        async for e in stream_events(
            agent.graph, thread_id=thread_id, context=context, request=request
        )
    ]


async def test_a_rag_run_answers_with_citations_of_retrieved_chunks(
    agent: Agent, settings: Settings, embedded_url: str, tmp_path: Path, thread_id: str
) -> None:
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    collection = f"rag_{uuid.uuid4().hex[:10]}"
    async with open_collection(settings, collection, create=True, url=embedded_url) as (
        store,
        embedder,
    ):
        await ingest(store, embedder, [tmp_path], chunk_size=500, chunk_overlap=50)

    context = Context(model="local", approval="never", collection=collection, max_output_tokens=64)
    events = await _events(agent, thread_id, context, "What do giant pandas eat?")

    retrieval = [e for e in events if e["event"] == "retrieval"]
    assert retrieval, [e["event"] for e in events]
    retrieved = {cid for e in retrieval for cid in e["chunk_ids"]}
    assert retrieval[0]["chunks"] == len(retrieval[0]["chunk_ids"]) > 0
    assert str(tmp_path / "pandas.md") in retrieval[0]["sources"]
    assert any(e["event"] == "citations" for e in events)

    results = [e["result"] for e in events if e["event"] == "step_result"]
    rag = [r for r in results if r["kind"] == "rag"]
    assert rag
    assert rag[0]["status"] == "done"
    assert rag[0]["citations"]
    assert {c["chunk_id"] for c in rag[0]["citations"]} <= retrieved
    for citation in rag[0]["citations"]:
        assert citation["quote"]
    assert rag[0]["grounding"] is not None
    assert rag[0]["grounding"] >= 0.5  # a model answer or the extractive fallback, grounded

    view = await view_thread(agent.graph, thread_id)
    assert view["status"] == "done"
    assert view["citations"]
    assert {c["chunk_id"] for c in view["citations"]} <= retrieved
    assert view["report"]["grounding"] is not None
    assert any("grounding" in s for s in view["report"]["steps"])


async def test_a_missing_collection_fails_the_step_clearly_and_the_critic_decides(
    agent: Agent, thread_id: str
) -> None:
    context = Context(model="local", approval="never", collection="no_such_docs", max_replans=0)
    events = await _events(agent, thread_id, context, "What do giant pandas eat?")
    results = [e["result"] for e in events if e["event"] == "step_result"]
    assert results
    assert results[0]["status"] == "failed"
    assert "no collection 'no_such_docs'" in (results[0]["error"] or "")
    view = await view_thread(agent.graph, thread_id)
    assert view["status"] == "failed"
    assert view["report"]["verdict"] == "give_up"


OKAPI = {
    "okapi.md": "# The okapi\n\nThe okapi is a giraffid of the Ituri rainforest in Congo. It "
    "eats the leaves and buds of trees, fruit and fungi, and licks clay for its salt.\n",
    "rainforest.md": "# The Ituri rainforest\n\nThe Ituri rainforest lies in the north-east "
    "of Congo and is home to the okapi and to forest elephants.\n",
}


async def _ingest_okapi(settings: Settings, url: str, folder: Path) -> str:
    for name, text in OKAPI.items():
        (folder / name).write_text(text)
    collection = f"okapi_{uuid.uuid4().hex[:10]}"
    async with open_collection(settings, collection, create=True, url=url) as (store, embedder):
        await ingest(store, embedder, [folder], chunk_size=500, chunk_overlap=50)
    return collection


async def test_a_question_matching_an_ingested_collection_is_answered_from_it(
    agent: Agent, settings: Settings, embedded_url: str, tmp_path: Path, thread_id: str
) -> None:
    collection = await _ingest_okapi(settings, embedded_url, tmp_path)
    context = Context(model="local", approval="never", max_output_tokens=64)  # none named
    events = await _events(agent, thread_id, context, "What does the okapi eat?")

    plan = next(e for e in events if e["event"] == "plan_update")
    assert {s["kind"] for s in plan["plan"]["steps"]} == {"rag"}
    assert f"collection {collection!r} (similarity" in plan["reason"]
    retrieval = [e for e in events if e["event"] == "retrieval"]
    assert retrieval
    assert {e["collection"] for e in retrieval} == {collection}
    retrieved = {cid for e in retrieval for cid in e["chunk_ids"]}
    view = await view_thread(agent.graph, thread_id)
    assert view["status"] == "done"
    assert view["citations"]
    assert {c["chunk_id"] for c in view["citations"]} <= retrieved
    assert str(tmp_path / "okapi.md") in {c["source"] for c in view["citations"]}


async def test_an_unrelated_question_or_documents_off_keeps_reasoning_steps(
    agent: Agent, settings: Settings, embedded_url: str, tmp_path: Path
) -> None:
    await _ingest_okapi(settings, embedded_url, tmp_path)
    asked = [
        ("How do I reverse a linked list in Python?", Context(approval="never")),
        ("What does the okapi eat?", Context(approval="never", documents=False)),
    ]
    for question, context in asked:
        thread_id = f"test-{uuid.uuid4().hex}"
        context = Context(**{**context.__dict__, "model": "local", "max_output_tokens": 32})
        events = await _events(agent, thread_id, context, question)
        plan = next(e for e in events if e["event"] == "plan_update")
        assert {s["kind"] for s in plan["plan"]["steps"]} == {"reasoning"}, question
        assert not [e for e in events if e["event"] == "retrieval"], question
        assert (await view_thread(agent.graph, thread_id))["status"] == "done"


async def test_an_unreachable_store_fails_the_step_clearly_and_the_run_ends_cleanly(
    agent: Agent, thread_id: str
) -> None:
    # The agent's saver, with rag steps pointed at a port where no Postgres listens.
    nowhere = Library(url="postgresql://postgres@127.0.0.1:1/agentgraph")
    graph = compile_graph(agent.db.saver, step_attempts=1, library=nowhere)
    context = Context(model="local", approval="never", collection="zoo", max_replans=0)
    events = [
        e
        async for e in stream_events(
            graph, thread_id=thread_id, context=context, request="What do okapis eat?"
        )
    ]
    results = [e["result"] for e in events if e["event"] == "step_result"]
    assert results
    assert {r["status"] for r in results} == {"failed"}
    assert all("cannot reach Postgres" in (r["error"] or "") for r in results)
    view = await view_thread(graph, thread_id)
    assert view["status"] == "failed"
    assert view["report"]["verdict"] == "give_up"
    assert view["next"] == []


async def test_astream_events_in_process_reports_the_retrieval_and_the_tokens(
    agent: Agent, settings: Settings, embedded_url: str, tmp_path: Path, thread_id: str
) -> None:
    """What a notebook's `graph.astream_events` shows of a rag step: LangChain's retriever
    events with the documents, and the model's tokens, both tagged with the step."""
    (tmp_path / "pandas.md").write_text(DOCS["pandas.md"])
    collection = f"rag_{uuid.uuid4().hex[:10]}"
    async with open_collection(settings, collection, create=True, url=embedded_url) as (
        store,
        embedder,
    ):
        await ingest(store, embedder, [tmp_path], chunk_size=500, chunk_overlap=50)
    context = Context(
        model="local", approval="never", collection=collection, max_output_tokens=24, mode="direct"
    )
    events = [
        e
        async for e in agent.graph.astream_events(
            {"request": "What do giant pandas eat?"},
            {"configurable": {"thread_id": thread_id}},
            context=context,
            version="v2",
        )
    ]
    [retrieved] = [e for e in events if e["event"] == "on_retriever_end"]
    documents = retrieved["data"]["output"]
    assert documents
    assert documents[0].metadata["source"] == str(tmp_path / "pandas.md")
    assert "bamboo" in documents[0].page_content
    assert retrieved["metadata"]["step_id"] == "answer"
    assert "agentgraph:step:answer" in retrieved["tags"]
    tokens = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert tokens
    assert {e["metadata"]["langgraph_node"] for e in tokens} == {"rag"}
    assert {e["metadata"]["step_id"] for e in tokens} == {"answer"}
