"""The tutorial notebooks (tutorials/*.ipynb) run top to bottom, offline, and are stored executed (small figures).

Each notebook runs in a fresh Jupyter kernel (nbclient) whose working folder is one temporary folder shared by the
module, so the notebooks write nothing into the repository and notebooks 02-04 reuse the demo data notebook 01
made (``prepare_demo`` reuses a folder made with the same settings), as they do when run in order by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))

# Notebooks that need another environment than the main install: name -> (marker, module that environment has).
OTHER_ENVIRONMENT = {"05_monai_label.ipynb": ("monailabel", "monailabel")}


def _params():
    params = []
    for path in NOTEBOOKS:
        marks = []
        if path.name in OTHER_ENVIRONMENT:
            marker, module = OTHER_ENVIRONMENT[path.name]
            marks = [
                getattr(pytest.mark, marker),
                pytest.mark.skipif(
                    importlib.util.find_spec(module) is None, reason=f"{path.name} runs in the {marker} environment"
                ),
            ]
        params.append(pytest.param(path, marks=marks, id=path.stem))
    return params


#: the largest a stored notebook may be (its figures are shrunk when it is stored; see tutorials/README.md)
MAX_NOTEBOOK_BYTES = 1_500_000


def test_notebooks_are_stored_executed_and_small():
    """A reader on the web sees the outputs: every notebook that runs in the main environment is stored executed,
    top to bottom, with its figures, and small; the others are stored without outputs."""
    assert len(NOTEBOOKS) >= 4
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        assert notebook["nbformat"] == 4, path.name
        assert notebook["metadata"]["kernelspec"]["name"] == "python3", path.name
        assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name} is too large: shrink its figures"
        code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        if path.name in OTHER_ENVIRONMENT:
            assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code), path.name
            continue
        counts = [cell["execution_count"] for cell in code]
        assert counts == list(range(1, len(code) + 1)), f"{path.name} is not stored executed top to bottom"
        for index, cell in enumerate(code):
            source = "".join(cell["source"])
            if "plt.show()" in source or "display(" in source:
                assert any("image/png" in o.get("data", {}) for o in cell["outputs"]), f"{path.name}: cell {index}"
            assert not any(o.get("output_type") == "error" for o in cell["outputs"]), f"{path.name}: cell {index}"
            text = json.dumps(cell["outputs"])
            for local in _local_folders():  # the storing machine's folders are taken out (scripts/store_tutorials.py)
                assert local not in text, f"{path.name}: cell {index} shows the local folder {local}"


def _local_folders() -> list[str]:
    import sys
    import sysconfig

    return [str(TUTORIALS.parent), sysconfig.get_paths()["purelib"], sys.prefix]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tutorials")


@pytest.mark.parametrize("path", _params())
def test_notebook_runs_top_to_bottom(path, workdir):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    # tiny models gain nothing from threads; on a shared 2-core machine, spinning thread pools cost minutes
    client.execute(env={**os.environ, "OMP_NUM_THREADS": "1"})
    # the pictures are the point: every cell that shows a figure must have put one into the notebook
    blank = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        and ("plt.show()" in cell.source or "display(" in cell.source)
        and not any("image/png" in output.get("data", {}) for output in cell.outputs)
    ]
    assert not blank, f"{path.name}: cells {blank} showed no figure (did something switch matplotlib's backend?)"
