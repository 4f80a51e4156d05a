"""`http_get`: a GET request to a host on the manifest's allow-list, and to nothing else.

Off unless a manifest enables it. The host must be listed (exactly, or under a `*.` entry);
the addresses it resolves to must not be loopback, private or link-local unless the manifest
allows loopback (for a service on the same machine); redirects are not followed (the result
says where they lead); the body is read up to the tool's output cap.
"""

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, Field

from app.errors import ToolArgumentError, ToolFailedError
from app.tools.manifest import HttpGetConfig
from app.tools.registry import ToolSpec

USER_AGENT = "agentgraph-http-get/1"


class HttpGetArgs(BaseModel):
    """Arguments of `http_get`."""

    url: str = Field(
        description="An http or https URL on an allowed host.",
        min_length=8,
        max_length=2_000,
        pattern=r"^https?://[^\s]+$",
    )


def host_allowed(host: str, allow_hosts: list[str]) -> bool:
    """Whether `host` is listed, exactly or under a `*.domain` entry."""
    host = host.lower().rstrip(".")
    for entry in allow_hosts:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
        if host == entry:
            return True
    return False


async def _check_addresses(host: str, port: int, *, allow_loopback: bool) -> None:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ToolFailedError(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_loopback and allow_loopback:
            continue
        if address.is_loopback or address.is_private or address.is_link_local:
            raise ToolArgumentError(
                f"{host!r} resolves to {address}, an internal address the tool may not reach"
            )


def http_get_tool(config: HttpGetConfig) -> ToolSpec:
    """Return `http_get` limited to `config.allow_hosts`."""

    async def run(args: BaseModel) -> str:
        assert isinstance(args, HttpGetArgs)
        parts = urlsplit(args.url)
        host = parts.hostname or ""
        if not host_allowed(host, config.allow_hosts):
            raise ToolArgumentError(
                f"{host!r} is not on the tool's allow-list ({', '.join(config.allow_hosts)})"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await _check_addresses(host, port, allow_loopback=config.allow_loopback)
        limit = config.max_output_chars * 4
        async with (
            httpx.AsyncClient(
                follow_redirects=False, timeout=config.timeout_s, trust_env=False
            ) as client,
            client.stream("GET", args.url, headers={"User-Agent": USER_AGENT}) as response,
        ):
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) >= limit:
                    break
        if response.is_redirect:
            return f"HTTP {response.status_code}: redirects to {response.headers.get('location')}"
        text = bytes(body[:limit]).decode(response.encoding or "utf-8", errors="replace")
        return f"HTTP {response.status_code}\n{text}"

    return ToolSpec(
        name="http_get",
        description="Fetch a web page or API response by GET from an allowed host: "
        + ", ".join(config.allow_hosts),
        effect="external",
        arguments=HttpGetArgs,
        run=run,
        timeout_s=config.timeout_s,
        max_output_chars=config.max_output_chars,
        hint=re.compile(r"https?://", re.IGNORECASE),
    )
