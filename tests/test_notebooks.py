"""The notebooks under docs/ run top to bottom in a real Jupyter kernel (nbclient + ipykernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "docs" / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_the_notebook_runs_and_shows_trees_as_html(path: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    assert not [c for c in notebook.cells if c.get("outputs")], "commit notebooks without outputs"
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, when one fails
    results = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "execute_result"
    ]
    first = results[0]  # the cell that ends with `state`
    html = first["data"]["text/html"]
    assert 'class="convtree"' in html
    assert "ct-active" in html
    assert "<script>" not in html  # the message holding a script is shown escaped
    assert "&lt;script&gt;" in html
    for output in results[:-1]:
        assert "text/html" in output["data"], output["data"].get("text/plain")
    streams = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )
    assert "flowchart TD" in streams
    assert "back at: Show me" in streams
