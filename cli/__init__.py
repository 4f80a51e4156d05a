"""The `agentgraph` command line: the composition root that drives the graph in process."""
