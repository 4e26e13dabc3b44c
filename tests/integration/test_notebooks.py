"""Every notebook in notebooks/ runs top to bottom (nbclient) on the real local model.

Each runs in a fresh temporary working directory: a notebook must write nothing where it is
run from (its run goes to a temp dir), and must print no warning. A notebook whose first cell
sets its size (``BUDGET = ...``, ``N = ...``) runs here with smaller values, papermill-style: the
suite checks that every cell runs, the notebook's own numbers are for readers to run.
"""

from __future__ import annotations

import gc
import re
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
#: notebook -> the first cell's settings to run it with here (each must be set in that cell)
SMALLER = {"quickstart.ipynb": {"BUDGET": 20, "N": 4}, "optimize_code.ipynb": {"MAX_LM_CALLS": 1}}


def _with_smaller_settings(notebook: Any, name: str) -> None:
    """Set the first code cell's size constants to the suite's smaller values."""
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    for key, value in SMALLER.get(name, {}).items():
        first.source, found = re.subn(
            rf"^{key} = \S+", f"{key} = {value}", first.source, flags=re.M
        )
        assert found == 1, f"{name}: its first code cell no longer sets {key}"


def _stderr_of(notebook: Any) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                texts.append(output.get("text", ""))
    return "".join(texts)


# quiet: about 60 s on the 2-core CI machine; 600 s survives a loaded machine's slowdown
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    _with_smaller_settings(notebook, path.name)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    started = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure
    finally:
        # nbclient leaves asyncio loops (AF_UNIX socket pairs) for the garbage collector: reap
        # them here, or their ResourceWarning surfaces in whichever test collects next
        del client
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    elapsed = time.perf_counter() - started
    stderr = _stderr_of(notebook)
    assert "Warning" not in stderr and "warn" not in stderr.lower(), stderr
    assert list(tmp_path.iterdir()) == [], "the notebook wrote into its working directory"
    print(f"{path.name}: {elapsed:.0f}s")
