"""The server under benchmark: `agentgraph serve`'s app with the zero-latency model, under
uvicorn in a process of its own (`python -m bench.served PORT WORKERS`), on the Postgres
its environment names."""

import subprocess
import sys

from app.db import open_database
from app.settings import get_settings
from bench.common import REPO, free_port, wait_ready


def start(env: dict[str, str], workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server process and wait until it is ready; return it and its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.served", str(port), str(workers)],
        cwd=REPO,
        env=env,
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{base}/readyz", name="the server", timeout_s=120)
    return proc, base


async def delete_threads(url: str | None, threads: list[str]) -> None:
    """Delete the benchmark's threads, so they do not crowd the user's thread list."""
    async with open_database(get_settings(), url=url) as db:
        for thread_id in threads:
            await db.saver.adelete_thread(thread_id)


def main() -> None:
    """Serve the benchmark's app, as `agentgraph serve [--workers N]` does."""
    from server.serve import serve

    port, workers = (int(a) for a in sys.argv[1:3])
    serve(
        host="127.0.0.1",
        port=port,
        workers=workers,
        app_factory="bench.zero_model:bench_app",
        log_level="warning",
    )


if __name__ == "__main__":
    main()
