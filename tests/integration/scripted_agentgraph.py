"""`agentgraph`, the real CLI and server, with the scripted models of `tests.fakes` registered:
for tests that need a model they control in a process of their own, e.g.
`python -m tests.integration.scripted_agentgraph serve --port 8000`."""

from cli.main import main
from tests.fakes import register_fakes

if __name__ == "__main__":
    register_fakes()
    main()
