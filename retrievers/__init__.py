"""Retrieval over your documents: ingestion, the pgvector store, hybrid search, evaluation.

`as_retriever(collection, mode="hybrid")` and `CollectionStore(collection)` give a collection
LangChain's `BaseRetriever` and `VectorStore` interfaces (`retrievers.interfaces`). They are
imported on first use, so that importing a small part of this package (say, the collection
name rule) does not import LangChain's vector-store machinery with it.
"""

from typing import Any

__all__ = ["CollectionRetriever", "CollectionStore", "as_retriever"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from retrievers import interfaces

        return getattr(interfaces, name)
    raise AttributeError(f"module 'retrievers' has no attribute {name!r}")
