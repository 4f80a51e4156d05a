"""MCP servers' tools as ToolSpecs, against a real MCP server over stdio
(tests/integration/mcp_notes_server.py): names, effects, validated arguments, results, the
server's errors, a server that cannot start, and state per call and per kept session."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from app.errors import ConfigError, ToolArgumentError, ToolFailedError
from app.tools.manifest import McpServer
from app.tools.mcp import load_mcp_tools, open_mcp_tools
from app.tools.policy import run_tool
from app.tools.registry import ToolSpec, with_limits

SERVER = Path(__file__).with_name("mcp_notes_server.py")
TOOLS = {"add", "add_note", "list_notes", "fail", "calls", "sleep", "two_parts"}


def notes_server(notes_dir: Path, **options: Any) -> McpServer:
    """The notes server's manifest entry, its notes kept under `notes_dir`."""
    return McpServer(
        transport="stdio",
        command=sys.executable,
        args=[str(SERVER)],
        env={"MCP_NOTES_DIR": str(notes_dir)},
        **options,
    )


@pytest.fixture(scope="module")
async def per_call(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ToolSpec]:
    """The notes server's tools, each call in a process of its own."""
    server = notes_server(
        tmp_path_factory.mktemp("notes"),
        effect="read",
        effects={"add_note": "write", "fail": "external"},
        timeout_s=20,
        max_output_chars=500,
    )
    return await load_mcp_tools({"notes": server})


@pytest.fixture
async def kept(tmp_path: Path) -> AsyncIterator[dict[str, ToolSpec]]:
    """The notes server's tools over one session (one process) for the test."""
    async with open_mcp_tools({"notes": notes_server(tmp_path)}) as tools:
        yield tools


def test_each_tool_is_named_after_its_server_and_has_its_entrys_effect_and_limits(
    per_call: dict[str, ToolSpec],
) -> None:
    assert set(per_call) == {f"notes_{tool}" for tool in TOOLS}
    effects = {name: spec.effect for name, spec in per_call.items()}
    assert effects["notes_add_note"] == "write"
    assert effects["notes_fail"] == "external"
    assert effects["notes_add"] == effects["notes_list_notes"] == "read"  # the server's
    assert {(s.timeout_s, s.max_output_chars) for s in per_call.values()} == {(20, 500)}
    assert per_call["notes_add"].description == "Add two integers."


def test_the_arguments_schema_is_the_servers(per_call: dict[str, ToolSpec]) -> None:
    schema = per_call["notes_add_note"].json_schema()
    assert schema["required"] == ["title", "text"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["title"]["minLength"] == 1
    assert schema["properties"]["title"]["description"] == "The note's title."
    assert schema["properties"]["priority"] == {
        "default": "low",
        "enum": ["low", "high"],
        "title": "Priority",
        "type": "string",
    }


async def test_a_call_returns_the_tools_text(per_call: dict[str, ToolSpec]) -> None:
    assert await run_tool(per_call["notes_add"], {"a": 2, "b": 40}) == "42"
    assert await run_tool(per_call["notes_two_parts"], {}) == "first\nsecond"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"a": "two", "b": 40}, "a: Input should be a valid integer"),
        ({"a": 2}, "b: Field required"),
        ({"a": 2, "b": 40, "c": 1}, "c: Extra inputs are not permitted"),
    ],
)
async def test_arguments_the_schema_does_not_take_are_refused_before_the_call(
    per_call: dict[str, ToolSpec], arguments: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ToolArgumentError, match=problem):
        await run_tool(per_call["notes_add"], arguments)


async def test_a_tools_error_is_a_failed_call_with_the_servers_message(
    per_call: dict[str, ToolSpec],
) -> None:
    with pytest.raises(ToolFailedError, match=r"^notes_fail: .*the disk is full"):
        await run_tool(per_call["notes_fail"], {"message": "the disk is full"})


async def test_a_server_that_does_not_start_is_a_config_error_naming_it(tmp_path: Path) -> None:
    ghost = McpServer(transport="stdio", command=str(tmp_path / "no-such-server"))
    with pytest.raises(ConfigError, match=r"MCP server 'ghost' .*check its command"):
        await load_mcp_tools({"ghost": ghost})
    # With a session already open to another server, the error is the same, not a group.
    with pytest.raises(ConfigError, match=r"MCP server 'ghost' .*No such file or directory"):
        async with open_mcp_tools({"notes": notes_server(tmp_path), "ghost": ghost}):
            pass


async def test_a_server_that_exits_at_once_is_a_config_error(tmp_path: Path) -> None:
    quitter = McpServer(transport="stdio", command=sys.executable, args=["-c", "exit(3)"])
    with pytest.raises(ConfigError, match=r"MCP server 'quitter' .*Connection closed"):
        await load_mcp_tools({"quitter": quitter})


async def test_per_call_notes_persist_on_disk_not_in_the_process(
    per_call: dict[str, ToolSpec],
) -> None:
    stored = await run_tool(per_call["notes_add_note"], {"title": "milk", "text": "2 litres"})
    assert stored == "stored 'milk' (1 notes)"
    await run_tool(
        per_call["notes_add_note"],
        {"title": "bread", "text": "rye", "tags": ["bakery"], "priority": "high"},
    )
    listed = await run_tool(per_call["notes_list_notes"], {})
    assert listed == "milk: 2 litres [low]\nbread: rye [bakery, high]"
    # Each call is a new process: the count kept in memory starts again every time.
    assert [await run_tool(per_call["notes_calls"], {}) for _ in range(2)] == ["0", "0"]


async def test_a_kept_session_is_one_process_whose_state_lasts(
    kept: dict[str, ToolSpec],
) -> None:
    assert [await run_tool(kept["notes_calls"], {}) for _ in range(3)] == ["0", "1", "2"]
    assert await run_tool(kept["notes_add"], {"a": 2, "b": 40}) == "42"
    await run_tool(kept["notes_add_note"], {"title": "milk", "text": "2 litres"})
    assert await run_tool(kept["notes_list_notes"], {}) == "milk: 2 litres [low]"
    with pytest.raises(ToolFailedError, match="the disk is full"):
        await run_tool(kept["notes_fail"], {"message": "the disk is full"})
    assert await run_tool(kept["notes_calls"], {}) == "3"  # the error left the session open


async def test_a_call_past_its_timeout_leaves_the_kept_session_usable(
    kept: dict[str, ToolSpec],
) -> None:
    hasty = with_limits(kept["notes_sleep"], timeout_s=0.2, max_output_chars=100)
    with pytest.raises(ToolFailedError, match=r"ran past its 0\.2 s timeout"):
        await run_tool(hasty, {"seconds": 5})
    assert await run_tool(kept["notes_sleep"], {"seconds": 0}) == "slept 0 s"


async def test_a_server_that_died_fails_its_calls_plainly(kept: dict[str, ToolSpec]) -> None:
    assert await run_tool(kept["notes_add"], {"a": 1, "b": 1}) == "2"
    servers = [
        p for p in psutil.Process().children(recursive=True) if str(SERVER) in " ".join(p.cmdline())
    ]
    assert len(servers) == 1
    servers[0].kill()
    servers[0].wait(timeout=10)
    with pytest.raises(ToolFailedError, match="MCP server 'notes' failed"):
        await run_tool(kept["notes_add"], {"a": 1, "b": 1})


async def test_an_error_in_the_block_comes_out_as_itself(tmp_path: Path) -> None:
    with pytest.raises(ToolArgumentError, match=r"^raised in the block$"):
        async with open_mcp_tools({"notes": notes_server(tmp_path)}):
            raise ToolArgumentError("raised in the block")


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """The notes server over streamable HTTP on a free port of 127.0.0.1; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MCP_NOTES_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_streamable_http_server_is_reached_by_its_url(http_server: str) -> None:
    server = McpServer(transport="streamable_http", url=http_server, effect="read")
    tools = await load_mcp_tools({"remote": server})
    assert "remote_add" in tools
    assert await run_tool(tools["remote_add"], {"a": 2, "b": 40}) == "42"
    async with open_mcp_tools({"remote": server}) as kept:
        assert [await run_tool(kept["remote_calls"], {}) for _ in range(2)] == ["0", "1"]


async def test_an_unreachable_url_is_a_config_error_naming_it() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    server = McpServer(transport="streamable_http", url=f"http://127.0.0.1:{port}/mcp", timeout_s=5)
    with pytest.raises(ConfigError, match=r"MCP server 'remote' .*check its url 'http://127"):
        await load_mcp_tools({"remote": server})
