"""Measure the local model's speed with llama.cpp's extra buffer types off (the default) and on.

`AGENTGRAPH_LOCAL_EXTRA_BUFFERS` lets llama.cpp place the weights in its extra CPU buffer
types (AMX tiles, repacked layouts). They are off by default because decoding through them
segfaults on Intel CPUs with AMX; this measures what the safe default costs on this machine.

Each configuration runs in a child process of its own, so that a crash of one is reported
(`crashed`, with the signal) instead of ending the benchmark, and the children alternate
(ABBA) so that a drift in the machine's speed touches both alike. A round is one generation
of `--tokens` tokens from a fixed prompt, on a cleared context: prompt tokens/s is the prompt
over the time to the first token, decode tokens/s the tokens after the first over the rest.

Run from the repository root:

    python -m bench.local_model [--rounds 4] [--generations 5] [--tokens 128] [--json]
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROMPT = (
    "Explain, in a few paragraphs, how a B-tree keeps its keys sorted and balanced, and why "
    "databases use it for indexes."
)
CONFIGS = {"off": False, "on": True}
ROOT = Path(__file__).resolve().parents[1]


def child(extra_buffers: bool, generations: int, tokens: int) -> dict[str, Any]:
    """Load the model as the application does and time `generations` generations."""
    from app.llama_loader import load_llama
    from app.local_llm import smollm2_path
    from app.settings import load_settings

    settings = load_settings()
    n_threads = settings.local_threads or os.cpu_count() or 1
    started = time.perf_counter()
    llama = load_llama(
        str(smollm2_path()),
        n_ctx=settings.local_context_tokens,
        n_threads=n_threads,
        extra_buffers=extra_buffers,
    )
    load_ms = (time.perf_counter() - started) * 1000
    messages = [{"role": "user", "content": PROMPT}]
    prompt_rates: list[float] = []
    decode_rates: list[float] = []
    prompt_tokens = 0
    for _ in range(generations):
        llama.reset()  # no prompt reuse from the last generation: the prompt is evaluated anew
        start = time.perf_counter()
        first: float | None = None
        produced = 0
        for chunk in llama.create_chat_completion(
            messages=messages, stream=True, max_tokens=tokens, temperature=0.0, seed=0
        ):
            if chunk["choices"][0].get("delta", {}).get("content"):
                produced += 1
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        prompt_tokens = int(llama.n_tokens) - produced
        if first is None or produced < 2:
            continue
        prompt_rates.append(prompt_tokens / (first - start))
        decode_rates.append((produced - 1) / (end - first))
    return {
        "load_ms": load_ms,
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_per_s": prompt_rates,
        "decode_tokens_per_s": decode_rates,
        "threads": n_threads,
        "loaded_with_extra_buffers": bool(llama._model.params.use_extra_bufts),
    }


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one configuration's child; return its figures, or how it crashed."""
    command = [
        sys.executable,
        "-m",
        "bench.local_model",
        "--child",
        name,
        "--generations",
        str(args.generations),
        "--tokens",
        str(args.tokens),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        how = (
            f"killed by {signal.Signals(-done.returncode).name}"
            if done.returncode < 0
            else f"exit {done.returncode}"
        )
        tail = done.stderr.strip().splitlines()[-3:]
        return {"crashed": how, "stderr_tail": tail}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def cpu_name() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the two configurations' children and gather their figures."""
    from llama_cpp import __version__, llama_print_system_info

    order = ["off", "on"]
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for round_no in range(args.rounds):
        for name in order if round_no % 2 == 0 else reversed(order):
            print(f"round {round_no + 1}/{args.rounds}: extra buffers {name}", file=sys.stderr)
            runs[name].append(run_child(name, args))
    figures: dict[str, Any] = {
        "cpu": cpu_name(),
        "llama_cpp_system_info": llama_print_system_info().decode().strip(),
        "llama_cpp_python": __version__,
        "rounds": args.rounds,
        "generations_per_round": args.generations,
        "max_tokens": args.tokens,
    }
    for name, results in runs.items():
        crashes = [r["crashed"] for r in results if "crashed" in r]
        good = [r for r in results if "crashed" not in r]
        prompt = [x for r in good for x in r["prompt_tokens_per_s"]]
        decode = [x for r in good for x in r["decode_tokens_per_s"]]
        figures[name] = {
            "extra_buffers": CONFIGS[name],
            "crashes": crashes,
            "loaded_with_extra_buffers": sorted({r["loaded_with_extra_buffers"] for r in good}),
            "threads": good[0]["threads"] if good else None,
            "prompt_tokens": good[0]["prompt_tokens"] if good else None,
            "load_ms_p50": statistics.median(r["load_ms"] for r in good) if good else None,
            "prompt_tokens_per_s_p50": statistics.median(prompt) if prompt else None,
            "decode_tokens_per_s_p50": statistics.median(decode) if decode else None,
            "generations": len(decode),
        }
    off, on = figures["off"], figures["on"]
    if off["decode_tokens_per_s_p50"] and on["decode_tokens_per_s_p50"]:
        for kind in ("decode", "prompt"):
            field = f"{kind}_tokens_per_s_p50"
            figures[f"{kind}_on_over_off"] = on[field] / off[field]
    return figures


def render(f: dict[str, Any]) -> str:
    """The figures as a readable table."""

    def num(value: float | None, fmt: str = ".1f") -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"cpu: {f['cpu']}",
        f"llama.cpp: {f['llama_cpp_system_info']}",
        f"{f['rounds']} rounds of {f['generations_per_round']} generations, "
        f"up to {f['max_tokens']} tokens each",
        "",
        f"{'extra buffers':<14}{'prompt tok/s':>14}{'decode tok/s':>14}{'load ms':>10}  crashes",
    ]
    for name in ("off", "on"):
        c = f[name]
        lines.append(
            f"{name:<14}{num(c['prompt_tokens_per_s_p50']):>14}"
            f"{num(c['decode_tokens_per_s_p50']):>14}{num(c['load_ms_p50'], '.0f'):>10}  "
            + (", ".join(c["crashes"]) or "none")
        )
    if "decode_on_over_off" in f:
        lines.append(
            f"on / off: prompt {f['prompt_on_over_off']:.2f}x, "
            f"decode {f['decode_on_over_off']:.2f}x"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.local_model",
        description="The local model's tokens/s with llama.cpp's extra buffer types off and on.",
    )
    parser.add_argument("--rounds", type=int, default=4, help="children per configuration")
    parser.add_argument("--generations", type=int, default=5, help="generations per child")
    parser.add_argument("--tokens", type=int, default=128, help="max tokens per generation")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--child", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("rounds", "generations", "tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --child, one configuration) and print its figures."""
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(CONFIGS[args.child], args.generations, args.tokens)))
        return 0
    figures = measure(args)
    print(json.dumps(figures) if args.json else render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
