"""`read_file` and `write_file`: files under one allow-listed directory, and nowhere else.

A path is taken relative to the root and resolved (symbolic links too) before it is used, so
`..`, absolute paths and links that lead out of the root are refused.
"""

import asyncio
import re
from pathlib import Path

from pydantic import BaseModel, Field

from app.errors import ToolArgumentError
from app.tools.manifest import FileToolConfig
from app.tools.registry import ToolSpec

_PATH_FIELD = Field(
    description="A path relative to the tool's directory, such as 'notes/today.txt'.",
    min_length=1,
    max_length=300,
    pattern=r"^[A-Za-z0-9_./ -]+$",
)


class ReadFileArgs(BaseModel):
    """Arguments of `read_file`."""

    path: str = _PATH_FIELD


class WriteFileArgs(BaseModel):
    """Arguments of `write_file`."""

    path: str = _PATH_FIELD
    content: str = Field(
        description="The text to write (the file is replaced).", max_length=1_000_000
    )


def inside(root: Path, relative: str) -> Path:
    """Resolve `relative` under `root`.

    Raises:
        ToolArgumentError: the path leads out of the root.
    """
    base = root.expanduser().resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or target == base:
        raise ToolArgumentError(f"{relative!r} is not a file under the tool's directory")
    return target


def read_file_tool(config: FileToolConfig) -> ToolSpec:
    """Return `read_file` over `config.root`."""

    def read(args: ReadFileArgs) -> str:
        target = inside(config.root, args.path)
        if not target.is_file():
            raise ToolArgumentError(f"there is no file {args.path!r}")
        size = target.stat().st_size
        if size > config.max_bytes:
            raise ToolArgumentError(
                f"{args.path!r} has {size} bytes; the tool reads at most {config.max_bytes}"
            )
        try:
            return target.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ToolArgumentError(f"{args.path!r} is not UTF-8 text") from None

    async def run(args: BaseModel) -> str:
        assert isinstance(args, ReadFileArgs)
        return await asyncio.to_thread(read, args)

    return ToolSpec(
        name="read_file",
        description=f"Read a UTF-8 text file under {config.root}.",
        effect="read",
        arguments=ReadFileArgs,
        run=run,
        timeout_s=config.timeout_s,
        max_output_chars=config.max_output_chars,
        hint=re.compile(r"\b(read|open|show|summari[sz]e)\b.{0,40}\bfile\b", re.IGNORECASE),
    )


def write_file_tool(config: FileToolConfig) -> ToolSpec:
    """Return `write_file` over `config.root`: it changes the world, so it runs only in a step
    a person approved (unless the manifest's policy says otherwise)."""

    def write(args: WriteFileArgs) -> str:
        target = inside(config.root, args.path)
        data = args.content.encode("utf-8")
        if len(data) > config.max_bytes:
            raise ToolArgumentError(
                f"the content has {len(data)} bytes; the tool writes at most {config.max_bytes}"
            )
        existed = target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"{'replaced' if existed else 'wrote'} {args.path} ({len(data)} bytes)"

    async def run(args: BaseModel) -> str:
        assert isinstance(args, WriteFileArgs)
        return await asyncio.to_thread(write, args)

    return ToolSpec(
        name="write_file",
        description=f"Write a UTF-8 text file under {config.root}, replacing it if it exists.",
        effect="write",
        arguments=WriteFileArgs,
        run=run,
        timeout_s=config.timeout_s,
        max_output_chars=config.max_output_chars,
        hint=re.compile(r"\b(write|save|store)\b.{0,60}\b(file|to [\w./-]+\.\w+)", re.IGNORECASE),
    )
