"""`xpnet study` on a tiny synthetic data set: every part runs, and the report states the numbers it measured."""

import json
import re

import pytest

from xpnet.cli import main


def test_study_writes_a_report_whose_captions_match_the_results(tmp_path, capsys):
    from conftest import write_synthetic_idx

    data = write_synthetic_idx(tmp_path / "data", n_train=400)
    out = tmp_path / "study"
    code = main(["study", "--data-dir", str(data), "--hidden", "8", "--hidden", "16", "--seeds", "2", "--epochs", "2",
                 "--optimizer-epochs", "2", "--batch-hidden", "8", "--batch-budget", "0.05", "--stochastic-rows", "60",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads((out / "results.json").read_text())
    report = (out / "README.md").read_text()
    assert {"hidden", "optimizers", "batch", "recipes", "init", "meta"} <= set(results)
    # part 1: 2 sizes × 2 seeds with the default recipe; the caption's mean is the mean of the runs
    runs = results["hidden"]
    assert [(r["hidden"], r["seed"]) for r in runs] == [([8], 0), ([8], 1), ([16], 0), ([16], 1)]
    assert all(r["dropout"] == 0.1 and r["label_smoothing"] == 0.1 and r["schedule"] == "onecycle" for r in runs)
    mean16 = (runs[2]["test_acc"] + runs[3]["test_acc"]) / 2
    assert f"16 units: **{mean16 * 100:.2f} %" in report
    # part 2: the four optimizers at their lrs, constant
    assert [(r["optimizer"], r["lr"]) for r in results["optimizers"]] == [("sgd", 0.1), ("momentum", 0.1),
                                                                          ("rmsprop", 1e-3), ("adam", 1e-3)]
    # part 3: batch sizes n / 128 / 1 (batch 1 on the subset), each stopped by the first epoch past the budget
    batch = results["batch"]
    assert [r["batch_size"] for r in batch] == [batch[0]["n_train"], 128, 1] and batch[2]["n_train"] == 60
    for r in batch:
        times = [e["time_s"] for e in r["records"]]
        by_budget = times[-1] >= 0.05 and (len(times) == 1 or times[-2] < 0.05)
        by_cap = r["epochs"] == r["max_epochs"] and times[-1] < 0.05  # tiny epochs: the epoch cap came first
        assert (by_budget or by_cap) and r["train_s"] == times[-1]
    # part 4: plain runs have no regularisation; default runs are part 1's at the largest size, with test per epoch
    rec = results["recipes"]
    assert all(r["dropout"] == 0 and r["schedule"] == "constant" and r["batch_size"] == 128 for r in rec["plain"])
    assert [r["seed"] for r in rec["default"]] == [0, 1] and all("test_acc" in e for e in rec["default"][0]["records"])
    for r in rec["plain"]:
        assert f"| plain | {r['seed']} | {r['test_acc'] * 100:.2f} % |" in report
    # part 5 and the runtime
    assert "He + relu: activation std" in report and (out / "init" / "init_study.md").exists()
    assert re.search(r"\*\*\d+\.\d minutes\*\* in all", report)
    pytest.importorskip("matplotlib")
    for png in ("hidden.png", "hidden_curves.png", "optimizers.png", "batch.png", "recipes.png", "init/init_trends.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png


def test_study_rejects_unknown_parts(capsys):
    assert main(["study", "--parts", "hidden,dance"]) == 1
    assert "unknown part 'dance'" in capsys.readouterr().err
