"""Chat model factory: the local SmolLM2 by default, any provider string, or a base URL."""

import logging
import threading
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel

from app.errors import ModelError
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)

ChatModelFactory = Callable[[str, Settings], BaseChatModel]

_factories: dict[str, ChatModelFactory] = {}
_cache: dict[tuple[str, str | None], BaseChatModel] = {}
_lock = threading.Lock()


def register_chat_model(prefix: str, factory: ChatModelFactory) -> None:
    """Make `prefix` (or `prefix:name`) resolve through `factory`, for custom providers."""
    with _lock:
        _factories[prefix] = factory
        for key in [k for k in _cache if k[0].split(":", 1)[0] == prefix]:
            del _cache[key]


def _build(spec: str, settings: Settings) -> BaseChatModel:
    prefix = spec.split(":", 1)[0]
    if prefix in _factories:
        return _factories[prefix](spec, settings)
    if spec == "local":
        from app.local_llm import ChatLocalLlama

        return ChatLocalLlama.from_settings(settings)
    if settings.model_base_url:
        from langchain_openai import ChatOpenAI

        # An OpenAI-compatible server: the spec is the model name it serves.
        return ChatOpenAI(
            model=spec.split(":", 1)[1] if spec.startswith("openai:") else spec,
            base_url=settings.model_base_url,
            api_key=settings.model_api_key or "not-needed",  # type: ignore[arg-type]
            stream_usage=True,  # no usage is streamed from a custom base_url without it
            max_retries=0,
        )
    from langchain.chat_models import init_chat_model

    try:
        return init_chat_model(spec, stream_usage=True)
    except (ImportError, ValueError) as exc:
        raise ModelError(
            f"cannot load chat model {spec!r}: {exc}. Use 'local', a provider string such as "
            "'openai:gpt-4o-mini', or set AGENTGRAPH_MODEL_BASE_URL for an OpenAI-compatible "
            "server."
        ) from exc


def is_loaded(spec: str, *, settings: Settings | None = None) -> bool:
    """Whether the chat model for `spec` is loaded already (asking never loads it)."""
    return (spec, (settings or get_settings()).model_base_url) in _cache


def get_chat_model(spec: str, *, settings: Settings | None = None) -> BaseChatModel:
    """Return the chat model for `spec`, loading it once per process.

    Raises:
        ModelError: the model cannot be loaded.
    """
    settings = settings or get_settings()
    key = (spec, settings.model_base_url)
    with _lock:
        model = _cache.get(key)
        if model is None:
            model = _cache[key] = _build(spec, settings)
    return model
