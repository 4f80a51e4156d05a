"""`python -m app.cli` runs the `agentgraph` command."""

from app.cli.main import main

main()
