"""What the OpenAI-compatible routes share (`server.openai_chat`, `server.openai_responses`):
OpenAI's error shape, the model ids, the thread a conversation runs on, and the `agentgraph`
extension field. A turn itself is in `server.turns`.
"""

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from app.auth import Principal
from app.errors import ConfigError, ModelNotFoundError
from server.schemas import MAX_THREAD_ID_CHARS, RunResult


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """An error as OpenAI's API writes it (`server.errors`)."""

    error: OpenAIErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIError} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}
MODEL_ID = "agentgraph"
THREAD_HEADER = "X-Thread-Id"


def model_spec(model: str) -> str | None:
    """The chat model spec a model id names (None: the configured one).

    Raises:
        ModelNotFoundError: the id is no agentgraph model.
    """
    if model == MODEL_ID:
        return None
    prefix = f"{MODEL_ID}:"
    if model.startswith(prefix) and len(model) > len(prefix):
        return model[len(prefix) :]
    raise ModelNotFoundError(
        f"the model {model!r} does not exist: use {MODEL_ID!r} or '{MODEL_ID}:<model spec>'"
    )


def checked_thread_id(given: str) -> str:
    """A thread id a client gave.

    Raises:
        ConfigError: it is empty, too long or holds control characters.
    """
    if not 0 < len(given) <= MAX_THREAD_ID_CHARS or any(ord(c) < 32 for c in given):
        raise ConfigError(
            f"a thread id is 1 to {MAX_THREAD_ID_CHARS} characters, no control characters"
        )
    return given


def derived_thread(who: Principal, opening: list[str], first_user: str) -> str:
    """The thread of a conversation no id names: the same for the same tenant, instructions
    and first user message, so a client that resends the history lands on it again."""
    seed = json.dumps([who.tenant, opening, first_user])
    return "chat-" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def extension_of(thread_id: str, result: RunResult | None) -> dict[str, Any]:
    """The `agentgraph` field of a response: what standard clients ignore and ours read."""
    return {
        "thread_id": thread_id,
        "run_id": result.run_id if result else None,
        "status": result.status if result else "interrupted",
        "citations": result.citations if result else [],
        "interrupt": result.pending_approval if result else None,
    }
