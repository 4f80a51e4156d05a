"""`python -m cli` runs the `agentgraph` command."""

from cli.main import main

main()
