"""Every notebook runs top to bottom in a fresh kernel on the embedded defaults, without an
error in any output."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.integration.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "time_travel.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_without_errors(path: Path, data_dir: Path) -> None:
    book = nbformat.read(path, as_version=4)
    # A fresh kernel on the embedded defaults: no DATABASE_URL, this session's data dir.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(AGENTGRAPH_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    client = NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute(env=env)

    errors = [
        output
        for cell in book.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    executed = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in executed)
