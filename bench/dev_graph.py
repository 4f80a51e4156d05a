"""The agent graph as `langgraph dev` serves it for `bench.http_load --langgraph-dev`: the graph of
`graphs/agent.py` (no checkpointer: `langgraph dev` supplies its own), with the benchmark's
zero-latency model registered in the serving process."""

from bench.zero_model import register
from graphs.agent import compile_graph

register()

graph = compile_graph()
"""Without a library: `langgraph dev` would open a connection per run just to learn that
the benchmark's database holds no collections (the served app looks on its pool)."""

__all__ = ["graph"]
