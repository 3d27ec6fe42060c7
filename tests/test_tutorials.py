"""Every tutorial notebook executes without error and reads like a tutorial.

The notebooks in ``tutorials/`` are executed with nbclient on the ``python3``
kernel (the interpreter running the tests, through ipykernel's own kernelspec),
in a temporary working directory so that nothing is written into the repository.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
EXPECTED = [
    "01_Joint_Attribution_Quickstart.ipynb",
    "02_Neuron_Path_Search.ipynb",
    "03_Class_Level_Path_Graphs.ipynb",
    "04_Pruning_With_Neuron_Paths.ipynb",
    "05_Pretrained_ViT_on_Your_Images.ipynb",
]
CELL_TIMEOUT = 300
SECTION = re.compile(r"^##\s+(\d+)\.\s+\S", re.MULTILINE)


def _sections(nb) -> list:
    return [
        int(m.group(1))
        for cell in nb.cells
        if cell.cell_type == "markdown"
        for m in SECTION.finditer(cell.source)
    ]


def _has_image(nb) -> bool:
    return any(
        "image/png" in output.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_every_tutorial_is_present():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_structured_and_carries_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "the notebook opens with a title"
    sections = _sections(nb)
    assert sections and sections == list(range(1, len(sections) + 1)), (
        f"numbered '## 1. ...' section headings in order; got {sections}"
    )
    assert _has_image(nb), "the committed copy carries at least one inline plot"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_executes(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # The kernel must run the interpreter of the tests (the project's environment).
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    # Offline and quick: the pretrained-ViT notebook must fall back at once.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    probe = nb.cells.pop(0)
    kernel_prefix = "".join(o.get("text", "") for o in probe.outputs).strip()
    assert os.path.realpath(kernel_prefix) == os.path.realpath(sys.prefix), (
        f"the python3 kernel runs in {kernel_prefix}, not in the tests' environment {sys.prefix}"
    )

    errors = [
        output for cell in nb.cells if cell.cell_type == "code"
        for output in cell.outputs if output.output_type == "error"
    ]
    assert not errors
    sections = _sections(nb)
    assert sections == list(range(1, len(sections) + 1)) and sections
    assert _has_image(nb), "the notebook shows at least one plot inline"
