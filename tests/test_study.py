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
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    report = (out / "README.md").read_text(encoding="utf-8")
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
    # part 3: batch sizes n / 128 / 1 (batch 1 on the subset), each sampled within epochs until the budget is spent
    batch = results["batch"]
    assert [r["batch_size"] for r in batch] == [batch[0]["n_train"], 128, 1] and batch[2]["n_train"] == 60
    for r in batch:
        s = r["samples"]
        assert s[0]["step"] == 0 and s[0]["time_s"] == 0  # the untrained network's point
        assert r["train_s"] >= 0.05 and s[-1]["time_s"] == r["train_s"] and s[-1]["step"] == r["steps"]
        steps = [e["step"] for e in s[1:-1]]
        assert all(t % r["sample_every"] == 0 for t in steps)  # regular step intervals
        assert steps == sorted(set(steps)) and all(0 < e["val_acc"] <= 1 for e in s)
        assert s[-1]["epochs"] == pytest.approx(r["steps"] * r["batch_size"] / r["n_train"])
    # batch 1 on 60 rows takes many steps per epoch: its samples fall within epochs
    assert any(e["epochs"] % 1 for e in batch[2]["samples"][1:-1])
    assert f"{batch[1]['steps']:,} steps" in report
    # part 4: plain runs have no regularisation; default runs are part 1's at the largest size, with test per epoch
    rec = results["recipes"]
    assert all(r["dropout"] == 0 and r["schedule"] == "constant" and r["batch_size"] == 128 for r in rec["plain"])
    assert [r["seed"] for r in rec["default"]] == [0, 1] and all("test_acc" in e for e in rec["default"][0]["records"])
    for r in rec["plain"]:
        assert f"| plain | {r['seed']} | {r['test_acc'] * 100:.2f} % |" in report
    # part 5 and the runtime
    assert "He + relu: activation std" in report and (out / "init" / "init_study.md").exists()
    assert re.search(r"\*\*\d+\.\d minutes\*\* in all", report)
    assert "seeds: 2 (full study: 3)" in report and "epochs of parts 1 and 4: 2 (full study: 20)" in report
    assert "network of part 3: 8 (full study: 256)" in report and "network of part 2: 16 (full study: 1024)" in report
    pytest.importorskip("matplotlib")
    for png in ("hidden.png", "hidden_curves.png", "optimizers.png", "batch.png", "recipes.png", "init/init_trends.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png


def test_study_parts_train_through_the_recipe(tmp_path):
    """The study's runs are the recipe's: same config and seed → the same weights as xpnet.run."""
    from conftest import write_synthetic_idx

    from xpnet.experiments.study import _cfg, train_run
    from xpnet.training.recipe import RunConfig, prepare_split, run

    data = write_synthetic_idx(tmp_path / "data", n_train=200)
    base = RunConfig(data_dir=str(data), recipe="default", activation="tanh")
    split = prepare_split(base)
    cfg = _cfg(base.resolve(), (8,), 1, "plain", optimizer="sgd", lr=0.1, epochs=2)
    assert (cfg.recipe, cfg.optimizer, cfg.dropout, cfg.schedule, cfg.activation) == ("plain", "sgd", 0.0, "constant", "tanh")
    r = train_run(split, cfg)
    ref = run(cfg, split=split)
    assert r["test_acc"] == ref.scores["accuracy"] and r["records"][-1]["val_loss"] == ref.history.last["val_loss"]


def test_study_help_has_device_and_no_machine_paths():
    from click.testing import CliRunner

    from xpnet.cli.study import study

    text = CliRunner().invoke(study, ["--help"]).output
    assert "--device" in text and "--data-dir DIR" in text and "/work" not in text and "shared/data" not in text


def test_portable_paths(tmp_path, monkeypatch):
    from xpnet.experiments.study import portable_command, portable_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XPNET_DATA", str(tmp_path / "cache"))
    assert portable_path(tmp_path / "docs" / "study") == "docs/study"
    assert portable_path(tmp_path / "cache" / "mnist") == "$XPNET_DATA/mnist"
    assert portable_path("/somewhere/else/mnist") == "DIR"
    assert portable_command(["study", "--data-dir", "/x/mnist", f"--out={tmp_path}/o", "--seeds", "2"]) == \
        "xpnet study --data-dir DIR --out=o --seeds 2"


def test_committed_study_has_no_machine_paths():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "docs" / "study"
    for name in ("README.md", "results.json"):
        text = (root / name).read_text(encoding="utf-8")
        assert "/work/" not in text and "shared/data" not in text and "/home/" not in text, name


def test_keep_redoes_one_part_and_reuses_part_1(tmp_path, capsys):
    from conftest import write_synthetic_idx

    data = write_synthetic_idx(tmp_path / "data", n_train=200)
    out = tmp_path / "study"
    common = ["study", "--data-dir", str(data), "--hidden", "8", "--seeds", "2", "--epochs", "2", "--out", str(out)]
    assert main(common + ["--parts", "hidden"]) == 0
    first = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert main(common + ["--parts", "recipes", "--keep", "--note", "Ran in two steps."]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["hidden"] == first["hidden"]  # kept as it was
    assert [r["test_acc"] for r in results["recipes"]["default"]] == [r["test_acc"] for r in first["hidden"]]
    assert results["meta"]["kept"] == ["hidden"] and set(results["meta"]["part_s"]) == {"hidden", "recipes"}
    report = (out / "README.md").read_text(encoding="utf-8")
    assert "## 1. Hidden layer size" in report and "## 4. Plain vs default recipe" in report
    assert "Ran in two steps." in report and "kept from an earlier run" in report


def test_study_rejects_unknown_parts(capsys):
    assert main(["study", "--parts", "hidden,dance"]) == 1
    assert "unknown part 'dance'" in capsys.readouterr().err
