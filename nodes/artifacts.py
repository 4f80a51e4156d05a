"""What steps keep as artefacts, and how a step result refers to them.

Two kinds of step produce artefacts today, because their output is worth keeping whole and
apart from the answer: a tool call whose output is structured (a JSON object or array, as
an API or a JSON file returns) or large (`LARGE_OUTPUT_CHARS` and more), and a rag step's
sources (the passages it retrieved, with their ids, sources and scores, as JSON: the table
a person checks the answer's citations against, and which the state never holds).
"""

import json
from typing import Any

from langgraph.config import get_config

from app.artifacts import ArtifactStore
from nodes.schemas import ArtifactRef

LARGE_OUTPUT_CHARS = 2000
"""A tool output this long is kept as a text artefact even when it is not JSON."""
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def tool_output_kind(text: str) -> tuple[str, str] | None:
    """Return the file extension and media type a tool output is kept under, or None when
    it is neither structured nor large."""
    if _is_json(text.strip()):
        return "json", JSON
    if len(text) >= LARGE_OUTPUT_CHARS:
        return "txt", TEXT
    return None


async def keep_artifact(
    store: ArtifactStore, step_id: str, *, name: str, media_type: str, content: bytes
) -> ArtifactRef:
    """Store an artefact of the running thread's step and return its reference."""
    stored = await store.put(
        _thread_id(), step_id, name=name, media_type=media_type, content=content
    )
    return ArtifactRef(
        id=stored.artifact_id, name=stored.name, media_type=stored.media_type, size=stored.size
    )


async def keep_tool_outputs(
    store: ArtifactStore, step_id: str, outputs: list[tuple[str, str]]
) -> list[ArtifactRef]:
    """Keep each `(tool, output)` worth keeping (`tool_output_kind`), named by tool and
    call number: `http_get-1.json`."""
    refs: list[ArtifactRef] = []
    for number, (tool, text) in enumerate(outputs, 1):
        kind = tool_output_kind(text)
        if kind is None:
            continue
        extension, media_type = kind
        refs.append(
            await keep_artifact(
                store,
                step_id,
                name=f"{tool}-{number}.{extension}",
                media_type=media_type,
                content=text.encode(),
            )
        )
    return refs


async def keep_sources(
    store: ArtifactStore, step_id: str, passages: list[dict[str, Any]]
) -> ArtifactRef:
    """Keep a rag step's retrieved passages as `sources.json`."""
    content = json.dumps(passages, ensure_ascii=False, indent=1).encode()
    return await keep_artifact(
        store, step_id, name="sources.json", media_type=JSON, content=content
    )


def _is_json(text: str) -> bool:
    if text[:1] not in ("{", "["):
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _thread_id() -> str:
    return str(get_config().get("configurable", {}).get("thread_id") or "")
