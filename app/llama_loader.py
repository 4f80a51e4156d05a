"""Load a GGUF with llama-cpp-python, with the model parameters its `Llama` has no keyword for.

llama-cpp-python 0.3 builds `llama_model_params` inside `Llama.__init__` and hands them
straight to the model loader. One field it offers no keyword for is `use_extra_bufts`: on by
llama.cpp's default, it lets the CPU backend place weights in its extra buffer types (AMX
tiles, repacked layouts), and decoding the SmolLM2 Q4_1 GGUF through them segfaults on Intel
CPUs with AMX. `load_llama` turns it off unless asked otherwise.

The seam is a subclass: `Llama.__init__` assigns `self.model_params` before it loads the
model, and the subclass applies its overrides as that assignment happens. Nothing of the
library is changed, and the loaded model's own params are read back, so that a release of
llama-cpp-python that builds its params differently fails loudly instead of crashing later.
This module imports llama.cpp's native library: import it only when a model is loaded.
"""

import logging
from typing import Any

from llama_cpp import Llama, llama_model_params, llama_print_system_info

from app.errors import ModelError

logger = logging.getLogger(__name__)


class ParamsLlama(Llama):
    """`Llama` whose model params get `use_extra_bufts = extra_buffers` before the load."""

    def __init__(self, model_path: str, *, extra_buffers: bool = False, **kwargs: Any) -> None:
        self._extra_buffers = extra_buffers
        super().__init__(model_path, **kwargs)
        loaded = bool(self._model.params.use_extra_bufts)
        if loaded != extra_buffers:
            self.close()
            raise ModelError(
                f"llama-cpp-python loaded the model with use_extra_bufts={loaded} where "
                f"{extra_buffers} was asked; this release builds its model params differently "
                "(agentgraph supports llama-cpp-python 0.3)"
            )

    @property
    def model_params(self) -> llama_model_params:
        """The params the model was loaded with."""
        return self._params

    @model_params.setter
    def model_params(self, params: llama_model_params) -> None:
        params.use_extra_bufts = self._extra_buffers
        self._params = params


def load_llama(
    path: str, *, n_ctx: int, n_threads: int, extra_buffers: bool, verbose: bool = False
) -> ParamsLlama:
    """Load the GGUF at `path` on the CPU, using extra buffer types only if `extra_buffers`.

    Raises:
        ModelError: the params could not be applied (an unsupported llama-cpp-python).
    """
    if extra_buffers and b"AMX" in llama_print_system_info():
        logger.warning(
            "AGENTGRAPH_LOCAL_EXTRA_BUFFERS is on and this CPU has AMX: decoding the local model "
            "through llama.cpp's extra buffer types segfaults on such CPUs; turn it off if the "
            "process dies"
        )
    return ParamsLlama(
        path,
        extra_buffers=extra_buffers,
        n_ctx=n_ctx,
        n_threads=n_threads,
        verbose=verbose,
        seed=0,
    )
