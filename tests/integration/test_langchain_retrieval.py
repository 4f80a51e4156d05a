"""The collections under LangChain's interfaces, on the real embedded Postgres and the real
embedding model: `CollectionStore` (a `VectorStore`) and `as_retriever` (a `BaseRetriever`),
in a LangChain chain, sync and async."""

import contextlib
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import VectorStore

from app.errors import RetrievalError
from app.settings import Settings, get_settings
from retrievers import CollectionStore, as_retriever
from retrievers.service import Library, open_collection, search
from tests.integration.conftest import REPO

DOCUMENTS = [
    Document(
        page_content="The giant panda eats bamboo almost exclusively, twelve kilograms a day.",
        metadata={"source": "zoo/pandas", "title": "Giant pandas"},
    ),
    Document(
        page_content="Green tea is rich in catechins such as epigallocatechin gallate.",
        id="tea-1",
    ),
    Document(page_content="The pgvector extension adds HNSW indexes to PostgreSQL."),
]


@pytest.fixture
def library(settings: Settings, embedded_url: str) -> Library:
    return Library(url=embedded_url, settings=settings)


@pytest.fixture
def collection() -> str:
    return f"lc_{uuid.uuid4().hex[:12]}"


async def test_a_vector_store_that_ingests_documents_and_searches_them(
    library: Library, collection: str, settings: Settings, embedded_url: str
) -> None:
    store = CollectionStore(collection, library=library)
    assert isinstance(store, VectorStore)

    ids = await store.aadd_documents(DOCUMENTS)
    assert ids[:2] == ["zoo/pandas", "tea-1"]
    assert ids[2].startswith("document:")
    assert await store.aadd_documents(DOCUMENTS[:1]) == ["zoo/pandas"]  # unchanged, kept

    [(panda, score)] = await store.asimilarity_search_with_score("what do pandas eat", k=1)
    assert panda.metadata["source"] == "zoo/pandas"
    assert panda.metadata["title"] == "Giant pandas"
    assert panda.id == panda.metadata["chunk_id"]
    assert 0 < score <= 1
    vector = store.embeddings.embed_query("catechins in tea")
    [tea] = await store.asimilarity_search_by_vector(vector, k=1)
    assert tea.metadata["source"] == "tea-1"
    # What the store added is what the application's own search finds.
    async with open_collection(settings, collection, url=embedded_url) as (raw, embedder):
        hits = await search(raw, embedder, "HNSW index", k=1, mode="fulltext")
    assert hits[0].source == ids[2]

    assert await store.adelete(["tea-1"]) is True
    assert await store.adelete(["tea-1"]) is False
    found = await store.asimilarity_search("catechins", k=3, mode="fulltext")
    assert all(d.metadata["source"] != "tea-1" for d in found)


def test_the_sync_methods_work_from_plain_code(library: Library, collection: str) -> None:
    store = CollectionStore(collection, library=library)
    assert store.add_texts(["Okapis are related to giraffes."], [{"source": "okapi"}]) == ["okapi"]
    [doc] = store.similarity_search("giraffe relatives", k=1)
    assert doc.metadata["source"] == "okapi"
    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert [d.metadata["source"] for d in retriever.invoke("okapi")] == ["okapi"]


async def test_as_retriever_in_a_chain_in_each_mode(library: Library, collection: str) -> None:
    await CollectionStore(collection, library=library).aadd_documents(DOCUMENTS)
    for mode, query in (
        ("dense", "which animal lives on bamboo"),
        ("fulltext", "epigallocatechin"),
        ("hybrid", "nearest neighbour indexes in Postgres"),
    ):
        retriever = as_retriever(collection, mode=mode, k=2, library=library)  # type: ignore[arg-type]
        assert isinstance(retriever, BaseRetriever)
        chain = retriever | RunnableLambda(lambda docs: [d.metadata["source"] for d in docs])
        sources = await chain.ainvoke(query)
        assert sources, mode
        expected = {"dense": "zoo/pandas", "fulltext": "tea-1", "hybrid": None}[mode]
        if expected:
            assert sources[0] == expected, (mode, sources)
        else:
            assert sources[0].startswith("document:"), (mode, sources)


async def test_bad_input_is_refused_with_a_clear_error(library: Library, collection: str) -> None:
    with pytest.raises(RetrievalError, match="bad collection name"):
        as_retriever("Not A Name")
    store = CollectionStore(collection, library=library)
    with pytest.raises(RetrievalError, match="empty document"):
        await store.aadd_documents([Document(page_content="   ", metadata={"source": "blank"})])
    with pytest.raises(RetrievalError, match=r"no collection .*: ingest documents into it first"):
        await as_retriever(f"missing_{uuid.uuid4().hex[:8]}", library=library).ainvoke("x")


async def test_the_readme_example_runs(
    embedded_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's LangChain example, as written, on this session's database."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- retriever-example -->")[1].split("<!-- /retriever-example -->")[0]
    code = block.split("```python")[1].split("```")[0]
    monkeypatch.setenv("DATABASE_URL", embedded_url)
    monkeypatch.setenv("AGENTGRAPH_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    try:
        body = "".join(f"    {line}\n" for line in code.splitlines())
        namespace: dict[str, Any] = {}
        exec(f"async def example():\n{body}", namespace)  # the README's own lines
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            await namespace["example"]()
    finally:
        get_settings.cache_clear()
    assert printed.getvalue().startswith("Staff get 25 days of leave. hr/leave ")
