"""Integration fixtures: the real embedded Postgres (a fresh database per session), the real
local model, and the `agentgraph` CLI run as separate processes."""

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from app.auth import Keys
from app.pg import open_pool, resolve_database_url
from app.settings import Settings
from bench import served
from bench.common import free_port, wait_ready
from graphs.service import Agent, open_agent

REPO = Path(__file__).resolve().parents[2]
PG15_URL = os.environ.get(
    "AGENTGRAPH_TEST_PG15_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _fresh_database(admin_url: str) -> tuple[str, str]:
    name = f"agentgraph_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    info["dbname"] = name
    return name, psycopg.conninfo.make_conninfo("", **info)


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data directory of this session's embedded Postgres cluster.

    Not under pytest's own temporary root: that is private to this user, and the cluster
    runs as its own system user when the tests run as root.
    """
    path = Path(tempfile.mkdtemp(prefix="agentgraph-it-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, database_url=None, auth="off")


@pytest.fixture(scope="session")
def embedded_url(settings: Settings) -> Iterator[str]:
    """A fresh database on the embedded PostgreSQL 18 cluster, dropped at the end."""
    admin = resolve_database_url(settings)
    name, url = _fresh_database(admin)
    yield url
    _drop_database(admin, name)


@pytest.fixture(scope="session")
def pg15_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL 15 (no pgvector), dropped at the end."""
    name, url = _fresh_database(PG15_URL)
    yield url
    _drop_database(PG15_URL, name)


@pytest.fixture(scope="session")
async def agent(settings: Settings, embedded_url: str) -> AsyncIterator[Agent]:
    """The compiled graph over the Postgres saver on the embedded cluster."""
    async with open_agent(settings, url=embedded_url) as opened:
        yield opened


@pytest.fixture
async def keys(embedded_url: str) -> AsyncIterator[Keys]:
    """The API key store on this session's database."""
    pool = await open_pool(embedded_url, max_size=2)
    store = Keys(pool)
    await store.setup()
    yield store
    await pool.close()


@pytest.fixture
def thread_id() -> str:
    return f"test-{uuid.uuid4().hex}"


class Cli:
    """Runs `agentgraph` as its own process, as a user would."""

    def __init__(self, data_dir: Path, database_url: str, *, module: str = "cli") -> None:
        self.module = module
        self.env = {
            **os.environ,
            "AGENTGRAPH_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "HF_HUB_OFFLINE": "1",
        }

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", self.module, *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(
        self, *args: str, stdout: Any = subprocess.PIPE, env: dict[str, str] | None = None
    ) -> "subprocess.Popen[str]":
        """Start `agentgraph ARGS` without waiting for it; its stderr goes to `stdout` too.
        `env` is laid over the CLI's environment."""
        return subprocess.Popen(
            [sys.executable, "-m", self.module, *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdout=stdout,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def json(self, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        proc = self.run(*args, "--json", env=env)
        assert proc.stdout, f"no JSON on stdout; stderr:\n{proc.stderr}"
        document: dict[str, Any] = json.loads(proc.stdout)
        document["_exit_code"] = proc.returncode
        return document


@pytest.fixture(scope="session")
def cli(data_dir: Path, embedded_url: str) -> Cli:
    return Cli(data_dir, embedded_url)


@pytest.fixture(scope="session")
def scripted_cli(data_dir: Path, embedded_url: str) -> Cli:
    """`agentgraph` with the `scripted:` test models (tests.fakes.scripted_spec) registered."""
    return Cli(data_dir, embedded_url, module="tests.integration.scripted_agentgraph")


@contextmanager
def serving(
    command: list[str],
    *,
    ready_url: str,
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Iterator[None]:
    """Run a server process until the block ends, once `ready_url` answers 200.

    Its output goes to `log_path`, which every failure message names.
    """
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(
                proc,
                ready_url,
                timeout_s=timeout,
                name=command[2],
                output=lambda: f"see {log_path}",
            )
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="session")
def openai_compatible_server(data_dir: Path) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, serving SmolLM2 as 'smollm2'
    (loaded without extra buffer types, as the local model is: `llama_server`)."""
    from app.local_llm import smollm2_path

    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    command = [
        sys.executable,
        "-m",
        "tests.integration.llama_server",
        "--model",
        str(smollm2_path()),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
    ]
    with serving(
        command, ready_url=f"{base}/models", log_path=data_dir / "llama-server.log", cwd=REPO
    ):
        yield base


@pytest.fixture(scope="session")
def api(settings: Settings, embedded_url: str) -> Iterator["RunningServer"]:
    """`agentgraph serve`'s app under real uvicorn on 127.0.0.1, on this session's database."""
    from tests.integration.server_harness import running_server

    with running_server(settings, embedded_url) as server:
        yield server


# Kept alive to the end of the session; see `remote_agent`.
_REMOTES: list["RemoteRunnable[Any, Any]"] = []


@pytest.fixture
async def remote_agent(api: "RunningServer") -> AsyncIterator["RemoteRunnable[Any, Any]"]:
    """A `langserve.RemoteRunnable` of the served agent, its connections closed after the test.

    It is never garbage: LangServe's client closes itself in a finalizer that starts a thread
    pool and waits for it, and run by the garbage collector in the in-process server's thread
    while that thread is starting a thread of its own (`asyncio.to_thread`), it deadlocks the
    server. Kept alive, its finalizer runs at exit, in the main thread.
    """
    from langserve import RemoteRunnable

    remote: RemoteRunnable[Any, Any] = RemoteRunnable(f"{api.base_url}/agent/")
    _REMOTES.append(remote)
    yield remote
    await remote.async_client.aclose()


if TYPE_CHECKING:
    from langserve import RemoteRunnable

    from tests.integration.server_harness import RunningServer


@pytest.fixture(scope="module")
def bench_servers(cli: Cli) -> Iterator[tuple[str, str]]:
    """Two `bench.served` processes (the `bench:` models registered) on the session's
    database; their base URLs."""
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for _ in range(2):
            proc, base = served.start(cli.env, workers=1)
            procs.append(proc)
            bases.append(base)
        yield bases[0], bases[1]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
