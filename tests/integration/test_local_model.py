"""The local model is loaded without llama.cpp's extra buffer types unless the setting asks.

Decoding through them (AMX tiles, repacked weights) segfaults on Intel CPUs with AMX, so a
machine without AMX, like most CI machines, would never notice them coming back on: these
tests read back the params the model was loaded with, and llama.cpp's own load log.
"""

import subprocess
import sys
import textwrap

import pytest

from app.local_llm import ChatLocalLlama
from app.settings import Settings, load_settings
from tests.integration.conftest import REPO


@pytest.fixture
def no_extra_buffers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTGRAPH_LOCAL_EXTRA_BUFFERS", raising=False)


@pytest.mark.usefixtures("no_extra_buffers_env")
def test_the_local_model_is_loaded_without_extra_buffers_by_default() -> None:
    model = ChatLocalLlama.from_settings(load_settings())
    llama, _ = model.llama()

    assert llama.model_params.use_extra_bufts is False
    assert llama._model.params.use_extra_bufts is False  # what llama.cpp was handed
    assert model.invoke("Say hello.").content


def test_the_setting_turns_extra_buffers_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTGRAPH_LOCAL_EXTRA_BUFFERS", "true")
    model = ChatLocalLlama.from_settings(load_settings())
    llama, _ = model.llama()

    assert llama._model.params.use_extra_bufts is True
    off, _ = ChatLocalLlama.from_settings(Settings(local_extra_buffers=False)).llama()
    assert off is not llama  # one instance per setting, never the other's
    assert off._model.params.use_extra_bufts is False


def _load_log(extra_buffers: bool) -> str:
    """llama.cpp's log of loading the local model, in a process of its own."""
    script = textwrap.dedent(
        f"""
        from app.llama_loader import load_llama
        from app.local_llm import smollm2_path
        load_llama(str(smollm2_path()), n_ctx=512, n_threads=1,
                   extra_buffers={extra_buffers}, verbose=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    # Without the line that lists the build's CPU features (`... | REPACK = 1 | ...`).
    return "\n".join(line for line in done.stderr.splitlines() if " = 1 |" not in line)


def test_llama_cpp_is_never_offered_its_extra_buffer_types_when_off() -> None:
    from llama_cpp import llama_print_system_info

    off = _load_log(False)
    assert "load_tensors" in off  # the log was captured at all
    assert "REPACK" not in off
    assert "AMX" not in off
    if b"REPACK = 1" in llama_print_system_info():
        # This build has repacked layouts, so with the setting on, llama.cpp weighs them:
        # AMX's on a CPU that has AMX, the CPU's own repacked layouts elsewhere.
        on = _load_log(True)
        assert "CPU_REPACK" in on or "AMX model buffer" in on, on[-2000:]
