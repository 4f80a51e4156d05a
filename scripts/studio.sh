#!/usr/bin/env bash
# Serve the graph to LangGraph Studio with `langgraph dev`, offline and private by default:
# the CLI's usage analytics and LangSmith tracing stay off unless you turn them on yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
export LANGGRAPH_CLI_NO_ANALYTICS="${LANGGRAPH_CLI_NO_ANALYTICS:-1}"
export LANGSMITH_TRACING="${LANGSMITH_TRACING:-false}"
exec .venv/bin/langgraph dev --no-browser "$@"
