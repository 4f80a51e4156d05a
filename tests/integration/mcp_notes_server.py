"""A small MCP server over stdio, a real peer for the MCP tools' tests.

Its notes are kept in a JSON file in the directory `MCP_NOTES_DIR` names, so they outlive
the server's process (the per-call client starts one process per call). `calls` counts how
often this process answered it, so a test can tell a kept session from a process per call.

Run: `python tests/integration/mcp_notes_server.py` (speaks MCP on stdin and stdout), or
with `--http PORT` (streamable HTTP at http://127.0.0.1:PORT/mcp).
"""

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Literal

from mcp.server.fastmcp import FastMCP
from pydantic import BaseModel, Field

server = FastMCP("notes", log_level="WARNING")
_calls = 0


class Note(BaseModel):
    """A note as `add_note` stores it."""

    title: str
    text: str
    tags: list[str] = Field(default_factory=list)


def _notes_file() -> Path:
    return Path(os.environ["MCP_NOTES_DIR"]) / "notes.json"


def _read_notes() -> list[Note]:
    path = _notes_file()
    if not path.exists():
        return []
    return [Note.model_validate(n) for n in json.loads(path.read_text(encoding="utf-8"))]


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def add_note(
    title: str = Field(description="The note's title.", min_length=1),
    text: str = Field(description="What the note says."),
    tags: list[str] | None = None,
    priority: Literal["low", "high"] = "low",
) -> str:
    """Store a note; a note of the same title is replaced."""
    notes = [n for n in _read_notes() if n.title != title]
    notes.append(Note(title=title, text=text, tags=[*(tags or []), priority]))
    _notes_file().write_text(json.dumps([n.model_dump() for n in notes]), encoding="utf-8")
    return f"stored {title!r} ({len(notes)} notes)"


@server.tool()
def list_notes() -> str:
    """List the stored notes, one a line: title, text and tags."""
    notes = _read_notes()
    return "\n".join(f"{n.title}: {n.text} [{', '.join(n.tags)}]" for n in notes) or "no notes"


@server.tool()
def fail(message: str) -> str:
    """Fail with the given message."""
    raise RuntimeError(message)


@server.tool()
def calls() -> int:
    """How often this process answered `calls` before."""
    global _calls
    _calls += 1
    return _calls - 1


@server.tool()
async def sleep(seconds: float = Field(ge=0, le=60)) -> str:
    """Answer after the given number of seconds."""
    await asyncio.sleep(seconds)
    return f"slept {seconds:g} s"


@server.tool()
def two_parts() -> list[str]:
    """Answer with two text parts."""
    return ["first", "second"]


if __name__ == "__main__":
    # `--http PORT`: streamable HTTP on 127.0.0.1:PORT/mcp instead of stdio.
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.settings.host, server.settings.port = "127.0.0.1", int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run("stdio")
