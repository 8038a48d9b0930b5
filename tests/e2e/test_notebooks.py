"""Every notebook under notebooks/ runs top to bottom in a real Jupyter kernel without an error."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# HTML that must be displayed somewhere in a notebook: a flow's graph and a run.
SHOWN = {"quickstart.ipynb": ('class="rayline-graph"', 'class="rayline-run"')}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The kernel is this interpreter (the venv's), with its own RAYLINE_HOME and its own local Ray.
    monkeypatch.setenv("RAYLINE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYLINE_DB_URL", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    nb = nbformat.read(path, as_version=4)
    # "python3" is ipykernel's native kernel: jupyter_client starts it with this sys.executable.
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    html = [o.get("data", {}).get("text/html", "") for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", [])]
    for marker in SHOWN.get(path.name, ()):
        assert any(marker in "".join(h) for h in html), f"{path.name} displays no {marker}"
