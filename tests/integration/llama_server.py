"""llama-cpp-python's OpenAI-compatible server, loading its model as agentgraph does.

The server has no setting for llama.cpp's extra buffer types, which are on by llama.cpp's
default and make decoding segfault on Intel CPUs with AMX (see `app.llama_loader`). The
server reads `llama_cpp.Llama` each time it loads a model, so this peer points that name at
the project's loader class before it starts: the same arguments, extra buffer types off.
Run as `python -m tests.integration.llama_server` with llama_cpp.server's own options.
"""

import llama_cpp
from llama_cpp.server.__main__ import main

from app.llama_loader import ParamsLlama

if __name__ == "__main__":
    llama_cpp.Llama = ParamsLlama  # type: ignore[misc]
    main()
