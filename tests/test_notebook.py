"""examples/course.ipynb runs top to bottom (nbclient, small parameters through the environment), and the
committed copy carries the outputs of a full run without errors."""

from __future__ import annotations

import os
import re

import pytest

from conftest import REPO, SHARED_MNIST

NOTEBOOK = REPO / "examples" / "course.ipynb"
nbformat = pytest.importorskip("nbformat")


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "".join(out)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_notebook_runs_with_small_parameters(monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"needs MNIST's training files in {SHARED_MNIST}")
    monkeypatch.setenv("XPNET_MNIST_DIR", str(SHARED_MNIST))
    monkeypatch.setenv("XPNET_NB_EPOCHS", "1")
    monkeypatch.setenv("XPNET_NB_LIMIT", "1500")
    monkeypatch.setenv("XPNET_NB_HIDDEN", "10,32")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first cell that fails
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = "\n".join(_text(c) for c in code)
    assert re.search(r"mnist: 1,3[45]\d train / 1[45]\d val / 10,000 test", text)  # the parameters reached it
    # the notes' gradients equal xpnet's; finite differences agree
    diffs = [float(d) for d in re.findall(r"max \|notes − xpnet\| = ([0-9.e+-]+)", text)]
    assert len(diffs) == 2 and max(diffs) < 1e-10
    err = float(re.search(r"\(‖·‖ \+ ‖·‖\) = ([0-9.e+-]+)", text).group(1))
    assert err < 1e-7
    assert "hidden    10:" in text and "hidden    32:" in text
    assert "GPU timing skipped: it needs CuPy" in text or "GPU (" in text
    assert _images(nb) >= 8  # part 2, 3, 4 and the six run pictures


def test_committed_notebook_holds_a_full_run():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "commit the notebook executed top to bottom"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = "\n".join(_text(c) for c in code)
    assert re.search(r"mnist: 5[34],\d{3} train / [56],\d{3} val / 10,000 test", text)  # all of MNIST, not CI's slice
    for h in (10, 256, 512, 1024):
        assert f"hidden {h:>5}:" in text
    assert _images(nb) >= 8
    assert "/work/" not in NOTEBOOK.read_text(encoding="utf-8")  # no machine paths in the committed outputs
