"""Graph nodes: one module per node, plus schemas and prompts."""
