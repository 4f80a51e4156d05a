"""`langgraph dev` as the baseline of `bench.http_load`: the same graph (bench/langgraph.json,
`bench.dev_graph`), started in a process of its own and driven through `langgraph_sdk`."""

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, BenchmarkError, free_port, wait_ready
from bench.zero_model import MODEL_SPEC, REQUEST


def start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start `langgraph dev` on the same graph (bench/langgraph.json) and wait until it is up.

    Raises:
        BenchmarkError: `langgraph dev` is not installed, exited, or did not come up.
    """
    executable = Path(sys.executable).with_name("langgraph")
    if not executable.exists():
        raise BenchmarkError("langgraph dev is not installed: pip install 'langgraph-cli[inmem]'")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(executable),
            "dev",
            "--no-browser",
            "--no-reload",
            "--allow-blocking",
            "--port",
            str(port),
            "--config",
            str(REPO / "bench" / "langgraph.json"),
        ],
        # langgraph dev resolves the graph's path from its working directory.
        cwd=REPO / "bench",
        env={**env, "PYTHONPATH": str(REPO), "LANGGRAPH_CLI_NO_ANALYTICS": "1"},
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{base}/ok", name="langgraph dev", timeout_s=180)
    return proc, base


async def one_run(client: Any, threads: list[str]) -> float:
    """Run the graph once under `langgraph dev` with `runs.wait` (stateless); return ms."""
    started = time.perf_counter()
    output = await client.runs.wait(
        None,
        "agent",
        input={"request": REQUEST},
        context={"model": MODEL_SPEC, "approval": "never", "mode": "plan"},
    )
    elapsed = (time.perf_counter() - started) * 1000
    if not isinstance(output, dict) or output.get("status") != "done":
        raise BenchmarkError(f"a langgraph dev run did not finish: {output}")
    return elapsed


def client(base: str) -> Any:
    """A `langgraph_sdk` client of `langgraph dev` at `base`."""
    from langgraph_sdk import get_client

    return get_client(url=base, timeout=300)


def compare(figures: dict[str, Any], dev_levels: list[Any]) -> None:
    """Add `langgraph dev`'s figures and ours-versus-theirs ratios to `figures`."""
    ours = {lv["clients"]: lv for lv in figures["levels"]}
    figures["langgraph_dev_measured"] = True
    figures["langgraph_dev_levels"] = [lv.as_dict() for lv in dev_levels]
    for dev in dev_levels:
        mine = ours.get(dev.clients)
        if mine is None:
            continue
        figures[f"p50_speedup_vs_langgraph_dev_{dev.clients}_clients"] = round(
            dev.p50_ms / mine["p50_ms"], 2
        )
        figures[f"throughput_ratio_vs_langgraph_dev_{dev.clients}_clients"] = round(
            mine["runs_per_s"] / dev.runs_per_s, 2
        )
