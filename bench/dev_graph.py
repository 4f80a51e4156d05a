"""The agent graph as `langgraph dev` serves it for `bench.http --langgraph-dev`: the graph of
`graphs/agent.py` (no checkpointer: `langgraph dev` supplies its own), with the benchmark's
zero-latency model registered in the serving process."""

from app.models import register_chat_model
from bench.overhead import zero_latency_factory
from graphs.agent import graph

register_chat_model("bench", zero_latency_factory)

__all__ = ["graph"]
