"""`xpnet bench --to-accuracy`: aggregation, the table's ratios, the runners, the files (tiny data)."""

import json

import numpy as np
import pytest

from xpnet.experiments.bench import tta
from xpnet.cli import main
from xpnet.cli.options import RECIPES


def _case(**kw):
    case = tta.recipe_case(RECIPES["default"], hidden=[16], epochs=3, target=0.9, dataset="blobs")
    case.update(kw)
    return case


def test_run_tta_interleaves_seeds_and_averages():
    calls = []

    def fake_run(c):
        calls.append((c["seed"], c["impl"]))
        seconds = {"xpnet": 1.0, "torch": 4.0}[c["impl"]] + c["seed"]
        return dict(c, seconds=seconds, test_acc=0.9 + 0.01 * c["seed"], device_name="cpu box")

    rows = tta.run_tta(["xpnet", "torch"], ["cpu"], [0, 1, 2], _case(), None, run=fake_run, say=lambda s: None)
    assert calls == [(0, "xpnet"), (0, "torch"), (1, "xpnet"), (1, "torch"), (2, "xpnet"), (2, "torch")]
    xp, th = rows
    assert xp["impl"] == "xpnet" and xp["seconds"] == pytest.approx(2.0) and th["seconds"] == pytest.approx(5.0)
    assert xp["test_acc"] == pytest.approx(0.91) and xp["reached"] and xp["seeds"] == [0, 1, 2]
    assert set(tta.TTA_FIELDS) <= set(xp)
    table = tta.tta_table(rows)
    assert "xpnet takes **0.40×** the time of torch (2.0 s vs 5.0 s)" in table
    assert "| blobs | cpu | xpnet | 3 | 2.0 | 91.00% | 1.0 s / 90.00%, 2.0 s / 91.00%, 3.0 s / 92.00% | yes (90.0%) |" in table


def test_failed_runs_become_an_error_row():
    rows = tta.run_tta(["xpnet"], ["cpu"], [0], _case(), None, run=lambda c: dict(c, error="boom"), say=lambda s: None)
    assert rows[0]["seconds"] is None and rows[0]["error"] == "boom"
    assert "| blobs | cpu | xpnet | 3 | – | – | boom | – |" in tta.tta_table(rows)


def _blobs(n, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(4, 12))
    y = rng.integers(0, 4, n)
    return (centers[y] + rng.normal(size=(n, 12))).astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("impl", ["xpnet", "torch"])
def test_runners_train_the_recipe(impl):
    if impl == "torch":
        pytest.importorskip("torch")
    X, y = _blobs(1200)
    Xt, yt = _blobs(400, seed=0)
    data = {"X_train": X, "y_train": y, "X_test": Xt, "y_test": yt}
    threads = None
    if impl == "torch":  # one thread: PyTorch's OpenMP pool crawls when the test machine's cores are busy
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
    try:
        # 10 epochs: one-cycle starts at peak/25, and xpnet's He init needs more steps than torch's smaller one
        res = tta.TTA_RUNNERS[impl](data, _case(device="cpu", seed=0, batch_size=64, epochs=10))
    finally:
        if threads:
            torch.set_num_threads(threads)
    assert res["seconds"] > 0 and res["test_acc"] > 0.95 and res["device_name"]


def test_bench_to_accuracy_end_to_end(tmp_path, capsys):
    from conftest import write_synthetic_idx

    data = write_synthetic_idx(tmp_path / "data", n_train=600)
    out = tmp_path / "tta"
    code = main(["bench", "--to-accuracy", "5", "--data-dir", str(data), "--hidden", "16", "--epochs", "1",
                 "--seeds", "1", "--peers", "xpnet", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "first-call JIT excluded" in captured.err and "| cpu | xpnet | 1 |" in captured.out
    saved = json.loads((out / "tta.json").read_text(encoding="utf-8"))
    (row,) = saved["results"]
    assert row["target"] == 0.05 and row["seeds"] == [0] and row["recipe"]["schedule"] == "onecycle"
    assert saved["meta"]["kind"] == "tta" and "JIT" in saved["meta"]["timing"]
    assert (out / "tta.md").read_text(encoding="utf-8").startswith("| dataset |")
    assert main(["bench", "--to-accuracy", "98", "--peers", "sklearn"]) == 2
    assert "no time-to-accuracy runner" in capsys.readouterr().err
