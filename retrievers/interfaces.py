"""The collections as LangChain's `VectorStore` and `BaseRetriever`, for your own chains.

    from retrievers import as_retriever
    docs = await as_retriever("handbook", mode="hybrid", k=4).ainvoke("What is the leave policy?")

A retriever searches like a rag step does (`retrievers.service.search`: dense, full text or
hybrid), and returns `Document`s whose `id` is the chunk's id, with `chunk_id`, `source`,
`title`, `position` and `score` in their metadata. `CollectionStore` adds documents with the
application's own ingestion (one source per document, split, embedded, an unchanged source
skipped), so what you add there, `agentgraph ingest` and the runs see alike.

The async methods are the native ones. The sync ones run the same code on an event loop of
their own in a worker thread, on connections of their own (so never with a library that
carries a pool of another loop).
"""

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict

from app.embeddings import Embedder
from retrievers.ingest import IngestReport, ingest_documents
from retrievers.names import validate_collection
from retrievers.search import Hit, SearchMode
from retrievers.service import Library, open_collection, search

T = TypeVar("T")


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a loop of its own, in a worker thread (so that it works
    whether or not the caller's thread runs a loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def to_document(hit: Hit) -> Document:
    """A retrieved chunk as a LangChain `Document`."""
    return Document(
        page_content=hit.content,
        id=hit.chunk_id,
        metadata={
            "chunk_id": hit.chunk_id,
            "source": hit.source,
            "title": hit.title,
            "position": hit.position,
            "score": hit.score,
        },
    )


class CollectionRetriever(BaseRetriever):
    """A collection as a LangChain retriever."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: str
    """The collection searched."""
    mode: SearchMode = "hybrid"
    """dense, fulltext or hybrid (the reciprocal-rank fusion of the two)."""
    k: int = 4
    """Chunks returned."""
    source: str | None = None
    """Only chunks of this source, or of sources under it."""
    library: Library = Library()
    """Which database and settings (default: the process settings' own)."""

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return await self._search(query)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return _sync(self._unpooled()._search(query))

    def _unpooled(self) -> "CollectionRetriever":
        library = Library(url=self.library.url, settings=self.library.settings)
        return self.model_copy(update={"library": library})

    async def _search(self, query: str) -> list[Document]:
        async with self.library.open(self.collection) as (store, embedder):
            hits = await search(
                store, embedder, query, k=self.k, mode=self.mode, source=self.source
            )
        return [to_document(h) for h in hits]


def as_retriever(
    collection: str,
    mode: SearchMode = "hybrid",
    *,
    k: int = 4,
    source: str | None = None,
    library: Library | None = None,
) -> CollectionRetriever:
    """Return a LangChain retriever over `collection` (see `CollectionRetriever`).

    Raises:
        RetrievalError: the name is not a valid collection name.
    """
    return CollectionRetriever(
        collection=validate_collection(collection),
        mode=mode,
        k=k,
        source=source,
        library=library or Library(),
    )


class EmbedderEmbeddings(Embeddings):
    """The application's embedding model under LangChain's `Embeddings` interface."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages."""
        return self.embedder.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self.embedder.embed_query(text)


class CollectionStore(VectorStore):
    """A collection as a LangChain vector store.

    A document is one source: its `metadata["source"]`, else its `id`, else a hash of its
    text; the ids that `add_documents` returns and `delete` takes are those sources. Adding
    a source again replaces its chunks (when its text changed).
    """

    def __init__(
        self,
        collection: str,
        *,
        library: Library | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
    ) -> None:
        self.collection = validate_collection(collection)
        self.library = library or Library()
        self.chunk_size = chunk_size or self.library.config.chunk_size
        self.chunk_overlap = (
            chunk_overlap if chunk_overlap is not None else (self.library.config.chunk_overlap)
        )
        self._embeddings: EmbedderEmbeddings | None = None

    @property
    def embeddings(self) -> Embeddings:
        """The collection's embedding model (loaded on first use)."""
        if self._embeddings is None:
            from app.embeddings import get_embedder

            config = self.library.config
            self._embeddings = EmbedderEmbeddings(get_embedder(config.embeddings, settings=config))
        return self._embeddings

    async def aingest(self, documents: Iterable[Document]) -> IngestReport:
        """Add documents (creating the collection if needed) and say what happened."""
        async with open_collection(
            self.library.config,
            self.collection,
            create=True,
            url=self.library.url,
            pool=self.library.pool,
        ) as (store, embedder):
            return await ingest_documents(
                store,
                embedder,
                documents,
                chunk_size=self.chunk_size,
                chunk_overlap=self.chunk_overlap,
            )

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Add documents; return their sources (those already stored unchanged included).

        Raises:
            RetrievalError: a document is empty.
        """
        from app.errors import RetrievalError

        report = await self.aingest(documents)
        if report.skipped:
            raise RetrievalError(
                "cannot add: " + "; ".join(f"{s.source}: {s.reason}" for s in report.skipped)
            )
        return [*report.added, *report.replaced, *report.unchanged]

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Add documents (see `aadd_documents`)."""
        return _sync(self._unpooled().aadd_documents(documents))

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add texts, each one document (see `aadd_documents`)."""
        texts = list(texts)
        documents = [
            Document(
                page_content=text,
                metadata=(metadatas[i] if metadatas else {}),
                id=ids[i] if ids else None,
            )
            for i, text in enumerate(texts)
        ]
        return await self.aadd_documents(documents)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add texts (see `aadd_texts`)."""
        return _sync(self._unpooled().aadd_texts(texts, metadatas, ids=ids))

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete the sources `ids` (and what is under them); True if any was stored."""
        deleted: list[str] = []
        async with self.library.open(self.collection) as (store, _):
            for source in ids or []:
                deleted += await store.delete_sources(source)
        return bool(deleted)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete sources (see `adelete`)."""
        return _sync(self._unpooled().adelete(ids))

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The `k` chunks closest to `query`, with their scores; `mode` (default dense) and
        `source` are keyword options."""
        mode: SearchMode = kwargs.get("mode", "dense")
        async with self.library.open(self.collection) as (store, embedder):
            hits = await search(store, embedder, query, k=k, mode=mode, source=kwargs.get("source"))
        return [(to_document(h), h.score) for h in hits]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The `k` chunks closest to `query` (see `asimilarity_search_with_score`)."""
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The `k` chunks closest to `query` (see `asimilarity_search_with_score`)."""
        return _sync(self._unpooled().asimilarity_search(query, k, **kwargs))

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The `k` chunks closest to `query`, with their scores."""
        return _sync(self._unpooled().asimilarity_search_with_score(query, k, **kwargs))

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """The `k` chunks nearest `embedding` (dense)."""
        async with self.library.open(self.collection) as (store, _):
            hits = await store.dense(embedding, limit=k, source=kwargs.get("source"))
        return [to_document(h) for h in hits]

    def as_retriever(self, **kwargs: Any) -> CollectionRetriever:  # type: ignore[override]
        """A retriever over this collection; `mode` (default hybrid), `k`, `source`."""
        search_kwargs = dict(kwargs.pop("search_kwargs", {}) or {})
        options = {**search_kwargs, **kwargs}
        return CollectionRetriever(
            collection=self.collection,
            mode=options.get("mode", "hybrid"),
            k=int(options.get("k", 4)),
            source=options.get("source"),
            library=self.library,
        )

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        collection: str = "default",
        **kwargs: Any,
    ) -> "CollectionStore":
        """Add texts to `collection` and return its store. `embedding` is not used: a
        collection embeds with the configured model (`AGENTGRAPH_EMBEDDINGS`)."""
        store = cls(collection, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def _unpooled(self) -> "CollectionStore":
        """This store on connections of its own, for the sync methods' own loop."""
        copy = CollectionStore(
            self.collection,
            library=Library(url=self.library.url, settings=self.library.settings),
            chunk_size=self.chunk_size,
            chunk_overlap=self.chunk_overlap,
        )
        copy._embeddings = self._embeddings
        return copy
