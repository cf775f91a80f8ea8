"""xpnet sweep on a tiny synthetic IDX data set: rows, columns, curves, resume, bad input."""

import csv
import json

import pytest

from xpnet.experiments.sweep import CSV_FIELDS, make_grid, run_id
from conftest import run_cli, write_synthetic_idx


@pytest.fixture
def data_dir(tmp_path):
    return write_synthetic_idx(tmp_path / "data", n_train=300)


def test_hidden_is_one_network_and_repeats_compare_networks(data_dir, tmp_path, capsys):
    """`--hidden 120,64` is one two-layer network in every command; sweep compares repeated ones."""
    out = tmp_path / "sweep"
    code, stdout, err = run_cli(["sweep", "--data-dir", data_dir, "--hidden", "8", "--hidden", "16,8", "--epochs", "1",
                                 "--out", out], capsys)
    assert code == 0, err
    with open(out / "results.csv", encoding="utf-8") as fh:
        shapes = sorted({row["hidden"] for row in csv.DictReader(fh)})
    assert shapes == ["16-8", "8"], shapes
    code, _, err = run_cli(["sweep", "--data-dir", data_dir, "--hidden", "8,0", "--out", out], capsys)
    assert code == 2 and "hidden sizes must be positive" in err


def test_run_id_is_stable_and_distinct():
    from xpnet.training.recipe import RunConfig

    base = RunConfig(epochs=3, batch_size=64)
    grid = make_grid(base, [(10,), (20, 5)], ["adam", "sgd"], repeats=2)
    a = grid[0]
    assert run_id(a) == run_id(a.replace()) and run_id(a) != run_id(a.replace(lr=1e-3).resolve())
    assert len({run_id(c) for c in grid}) == 8
    # every run is the recipe's: adam at the default recipe's peak lr, sgd at its own default, the base's seeds
    assert a.recipe == "default" and a.lr == 2e-3 and a.schedule == "onecycle" and a.dropout == 0.1
    sgd = [c for c in grid if c.optimizer == "sgd"]
    assert sgd and all(c.lr is None for c in sgd) and {c.seed for c in grid} == {0, 1}
    assert [c.seed for c in grid] == [0] * 4 + [1] * 4  # seed by seed: one split alive at a time
    assert run_id(make_grid(RunConfig(recipe="plain", epochs=3, batch_size=64), [(10,)])[0]) != run_id(a)


def test_sweep_writes_rows_and_resumes(data_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--data-dir", data_dir, "--hidden", "8", "--hidden", "16,8", "--optimizer", "adam,sgd", "--repeats", "2",
            "--epochs", "2", "--batch-size", "32", "--out", out]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert stdout.count(" run  ") == 8  # 2 shapes × 2 optimizers × 2 repeats
    with open(out / "results.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    assert set(CSV_FIELDS) <= set(rows[0])
    assert {r["hidden"] for r in rows} == {"8", "16-8"}
    assert {r["optimizer"] for r in rows} == {"adam", "sgd"}
    assert {r["seed"] for r in rows} == {"0", "1"}
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["meta"]["kind"] == "sweep" and len(data["results"]) == 8
    for r in data["results"]:
        assert 0 <= r["test_acc"] <= 1 and r["best_val_acc"] >= r["final_val_acc"] - 1e-12
        assert r["params"] == (784 * 8 + 8 + 8 * 10 + 10 if r["hidden"] == "8" else 784 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10)
        assert r["median_epoch_s"] > 0 and r["total_s"] >= r["median_epoch_s"] and r["device_name"]
        curve = json.loads((out / "curves" / f"{r['run_id']}.json").read_text(encoding='utf-8'))
        assert [c["epoch"] for c in curve["records"]] == [1, 2]
    assert (out / "best_model.npz").exists()
    assert data["meta"]["best_run"] == max(data["results"], key=lambda r: r["test_acc"])["run_id"]
    before = (out / "results.json").read_text(encoding="utf-8")

    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert stdout.count(" skip ") == 8 and " run  " not in stdout
    assert "0 run(s) trained, 8 skipped" in stdout
    assert (out / "results.json").read_text(encoding="utf-8") == before

    # one more seed: only the new runs train, the old rows are kept as they were
    more = list(args)
    more[more.index("--repeats") + 1] = "3"
    code, stdout, err = run_cli(more, capsys)
    assert code == 0, err
    assert stdout.count(" run  ") == 4 and stdout.count(" skip ") == 8
    after = json.loads((out / "results.json").read_text(encoding="utf-8"))["results"]
    assert after[:8] == data["results"] and len(after) == 12


@pytest.mark.parametrize("args, message", [
    (["--hidden", "10,x"], "--hidden"),
    (["--hidden", "0"], "--hidden"),
    (["--optimizer", "lbfgs"], "lbfgs"),
    (["--activation", "gelu"], "gelu"),
    (["--device", "tpu"], "tpu"),
])
def test_sweep_bad_input(data_dir, tmp_path, capsys, args, message):
    code, _, err = run_cli(["sweep", "--data-dir", data_dir, "--out", tmp_path / "o", *args], capsys)
    assert code != 0
    assert message in err and err.count("\n") == 1


def test_sweep_needs_out_and_data(tmp_path, capsys):
    code, _, err = run_cli(["sweep", "--hidden", "8"], capsys)
    assert code == 2 and "--out" in err
    code, _, err = run_cli(["sweep", "--data-dir", tmp_path / "nope", "--hidden", "8", "--out", tmp_path / "o"], capsys)
    assert code != 0 and "nope" in err and err.count("\n") == 1


def test_sweep_storage_second_worker_skips_what_the_first_trained(data_dir, tmp_path, capsys):
    pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    args = ["sweep", "--data-dir", data_dir, "--hidden", "8", "--hidden", "16", "--repeats", "2", "--epochs", "1", "--batch-size", "64",
            "--storage", storage, "--study-name", "g"]
    code, out, err = run_cli(args + ["--out", tmp_path / "a"], capsys)
    assert code == 0, err
    first = json.loads((tmp_path / "a" / "results.json").read_text(encoding="utf-8"))
    assert len(first["results"]) == 4 and first["meta"]["study"] == "g"
    code, out, err = run_cli(args + ["--out", tmp_path / "b"], capsys)
    assert code == 0, err
    assert out.count("trained by another worker") == 4 and "0 run(s) trained" in out
    assert not (tmp_path / "b" / "results.json").exists() or not json.loads((tmp_path / "b" / "results.json").read_text(encoding="utf-8"))["results"]
    code, out, err = run_cli(["sweep", "--data-dir", data_dir, "--storage", storage, "--out", tmp_path / "c"], capsys)
    assert code == 2 and "--study-name" in err
