"""Pictures of one training run (`xpnet train --plots DIR`, `xpnet report RUN_DIR|METRICS`): the files are
valid PNGs of a sensible size, and the data drawn is the run's (the log's curves, W0's rows, only wrong
predictions, the confusion matrix of `xpnet evaluate --json`)."""

import json
import shutil
import struct

import numpy as np
import pytest

from conftest import run_cli, write_synthetic_idx

pytest.importorskip("matplotlib")

PICTURES = ("learning_curves.png", "weights.png", "misclassified.png", "confusion.png")


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data = write_synthetic_idx(root / "data", n_train=300, n_test=200)
    from xpnet.cli import main

    # 10 hidden units, 3 epochs of plain Adam: learns the bars but not perfectly (some errors to draw)
    assert main(["train", "--data-dir", str(data), "--hidden", "10", "--epochs", "3", "--recipe", "plain",
                 "--lr", "0.003", "--plots", str(root / "run"), "--quiet"]) == 0
    return {"root": root, "data": data, "run": root / "run"}


def test_train_plots_writes_a_run_folder_of_pictures(run_dir):
    run = run_dir["run"]
    assert (run / "metrics.jsonl").exists() and (run / "model.npz").exists()
    for name in PICTURES:
        w, h = png_size(run / name)
        assert 300 <= w <= 2500 and 200 <= h <= 2500, (name, w, h)
    md = (run / "report.md").read_text(encoding="utf-8")
    html = (run / "report.html").read_text(encoding="utf-8")
    for name in PICTURES:
        assert f"]({name})" in md
    assert html.count("data:image/png;base64,") == 4


def test_confusion_matrix_matches_evaluate_json(run_dir, capsys):
    run = run_dir["run"]
    pics = json.loads((run / "pictures.json").read_text(encoding="utf-8"))
    code, out, err = run_cli(["evaluate", run / "model.npz", "--data-dir", run_dir["data"], "--json"], capsys)
    assert code == 0, err
    ev = json.loads(out)
    cm = np.array(pics["confusion_matrix"])
    assert cm.sum() == pics["n_test"] == ev["n"] == 200
    assert pics["confusion_matrix"] == ev["confusion_matrix"]
    assert pics["class_names"] == ev["class_names"]
    assert pics["n_misclassified"] == cm.sum() - np.trace(cm)


def test_misclassified_lists_only_wrong_predictions(run_dir):
    from xpnet.data import load_dataset
    from xpnet.io.npz import load

    pics = json.loads((run_dir["run"] / "pictures.json").read_text(encoding="utf-8"))
    ds = load_dataset(None, data_dir=run_dir["data"])
    proba = load(run_dir["run"] / "model.npz").predict_proba(ds.X_test)
    pred = proba.argmax(axis=1)
    wrong = pics["misclassified"]
    assert wrong, "the fixture's run should make some errors"
    assert len(wrong) == min(40, int((pred != ds.y_test).sum()))
    for w in wrong:
        assert w["true"] == ds.y_test[w["index"]] != w["pred"] == pred[w["index"]]
        assert w["p"] == pytest.approx(float(proba[w["index"], w["pred"]]))
    assert [w["p"] for w in wrong] == sorted((w["p"] for w in wrong), reverse=True)  # most confident first


@pytest.fixture
def drawn(monkeypatch):
    """The figures a call draws, kept open (pyplot.close is a no-op) so a test can read what is on them."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    return figures


def test_weight_images_are_rows_of_W0_and_curves_are_the_log(run_dir, tmp_path, drawn):
    from xpnet.experiments.report import load_run, run_pictures

    run = load_run(run_dir["run"])
    figs = run_pictures(run, tmp_path)
    assert list(figs) == ["curves", "weights", "misclassified", "confusion"]
    curves, weights, grid, confusion = drawn
    W0 = np.asarray(run["net"].W[0])
    tiles = [ax for ax in weights.axes if ax.images]
    assert len(tiles) == 10  # the notes' 10 hidden units: every one
    for u, ax in enumerate(tiles):
        np.testing.assert_array_equal(ax.images[0].get_array(), W0[u].reshape(28, 28))
        assert ax.get_title().startswith(f"unit {u} → ")
    loss_ax, acc_ax, lr_ax = curves.axes[:3]
    records = run["records"]
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [r["train_loss"] for r in records])
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), [r["val_loss"] for r in records])
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), [r["val_acc"] * 100 for r in records])
    np.testing.assert_allclose(lr_ax.lines[0].get_ydata(), [r["lr"] for r in records])
    # the grid titles name true → predicted of the wrong predictions, in order
    pics = json.loads((tmp_path / "pictures.json").read_text(encoding="utf-8"))
    titles = [ax.get_title().split("\n")[0] for ax in grid.axes if ax.images]
    assert titles == [f"{w['true']} → {w['pred']}" for w in pics["misclassified"]]
    np.testing.assert_array_equal(confusion.axes[0].images[0].get_array().sum(axis=1).round(6), 100.0)


def test_a_large_first_layer_draws_an_evenly_spaced_sample(tmp_path, drawn):
    from xpnet.experiments import plots

    rng = np.random.default_rng(0)
    W0 = rng.normal(size=(1024, 784))
    units = plots.weight_units(1024)
    assert len(units) == 64 and units[0] == 0 and units[-1] == 1023
    png = plots.first_layer_weights(W0, (28, 28), tmp_path / "w.png", units=units)
    w, h = png_size(png)
    assert 500 <= w <= 2500 and 500 <= h <= 2500
    tiles = [ax for ax in drawn[0].axes if ax.images]
    for u, ax in zip(units, tiles):
        np.testing.assert_array_equal(ax.images[0].get_array(), W0[u].reshape(28, 28))


def test_report_on_a_metrics_file_and_a_folder(run_dir, tmp_path, capsys):
    # a metrics log with its model named inside (xpnet train --metrics/--out), elsewhere than the log
    src = run_dir["run"]
    logdir = tmp_path / "logs"
    logdir.mkdir()
    shutil.copy(src / "metrics.jsonl", logdir / "run.jsonl")
    shutil.copy(src / "model.npz", logdir / "model.npz")
    code, out, err = run_cli(["report", logdir / "run.jsonl", "--data-dir", run_dir["data"]], capsys)
    assert code == 0, err
    for name in PICTURES:
        png_size(logdir / name)
    ref = json.loads((src / "pictures.json").read_text(encoding="utf-8"))
    got = json.loads((logdir / "pictures.json").read_text(encoding="utf-8"))
    assert got["confusion_matrix"] == ref["confusion_matrix"] and got["misclassified"] == ref["misclassified"]
    # a folder with the log only, which names no model file: curves, and a note instead of the rest
    only_log = tmp_path / "only"
    only_log.mkdir()
    events = [json.loads(line) for line in (src / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    for e in events:
        e.pop("model", None), e.pop("out", None)
    (only_log / "metrics.jsonl").write_text("\n".join(map(json.dumps, events)) + "\n", encoding="utf-8")
    code, out, err = run_cli(["report", only_log], capsys)
    assert code == 0, err
    assert (only_log / "learning_curves.png").exists() and not (only_log / "confusion.png").exists()
    assert "no model file" in (only_log / "report.md").read_text(encoding="utf-8")


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    code, out, err = run_cli(["report", bad], capsys)
    assert code == 1 and err.startswith("error:") and "Traceback" not in err
    code, out, err = run_cli(["train", "--plots", tmp_path / "bad.jsonl" / "x", "--epochs", "1"], capsys)
    assert code != 0 and "error:" in err and "Traceback" not in err
