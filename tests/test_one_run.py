"""One run, whoever starts it: the same config and seed give the same weights from `xpnet train`, `xpnet sweep`,
`xpnet tune` (a one-trial grid), `xpnet.training.recipe.run`, `fit(…, recipe=…)` and `xpnet.Classifier`.

Before, `train` ran the default recipe and `sweep`/`tune` the plain one (85.84 % vs 84.71 % on the same network,
epochs and seed); here every caller is compared weight for weight with `xpnet train`.
"""

import json

import numpy as np
import pytest

import xpnet
from conftest import run_cli, write_synthetic_idx
from xpnet.data import load_dataset
from xpnet.data.preprocess import train_val_split
from xpnet.training.recipe import RunConfig, prepare_split, run

HIDDEN, EPOCHS, SEED = "16", "2", "3"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_idx(tmp_path_factory.mktemp("one-run"), n_train=300, n_test=80)


@pytest.fixture(scope="module")
def cfg(data_dir):
    return RunConfig(data_dir=str(data_dir), hidden=(int(HIDDEN),), epochs=int(EPOCHS), seed=int(SEED)).resolve()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """`xpnet train` with the default recipe: the reference every other caller is compared with."""
    out = tmp_path_factory.mktemp("train") / "model.npz"
    from xpnet.cli import main

    assert main(["train", "--data-dir", str(data_dir), "--hidden", HIDDEN, "--epochs", EPOCHS, "--seed", SEED,
                 "--out", str(out), "--quiet"]) == 0
    return xpnet.load(out)


def _same(net, ref):
    assert net.sizes == ref.sizes
    for a, b in zip(net.params, ref.params):
        np.testing.assert_array_equal(xpnet.to_numpy(a), xpnet.to_numpy(b))


def test_run_equals_train(trained, cfg):
    result = run(cfg)
    _same(result.net, trained)
    assert result.config.recipe == "default" and result.config.schedule == "onecycle" and result.config.dropout == 0.1


def test_sweep_equals_train(trained, data_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    code, stdout, err = run_cli(["sweep", "--data-dir", data_dir, "--hidden", HIDDEN, "--epochs", EPOCHS, "--seed", SEED,
                                 "--out", out], capsys)
    assert code == 0, err
    _same(xpnet.load(out / "best_model.npz"), trained)
    row = json.loads((out / "results.json").read_text(encoding="utf-8"))["results"][0]
    split = prepare_split(RunConfig(data_dir=str(data_dir), seed=int(SEED)))  # test images normalised as in training
    assert row["test_acc"] == xpnet.evaluate(trained, split.X_test, split.y_test)["accuracy"]
    assert (row["recipe"], row["schedule"], row["dropout"], row["label_smoothing"]) == ("default", "onecycle", 0.1, 0.1)


def test_tune_one_trial_grid_equals_train(trained, data_dir, tmp_path, capsys):
    out = tmp_path / "tune"
    recipe = RunConfig().resolve()  # the one trial is the recipe's own values
    code, stdout, err = run_cli(["tune", "--method", "grid", "--data-dir", data_dir, "--epochs", EPOCHS, "--seed", SEED,
                                 "--hidden", HIDDEN, "--lr", recipe.lr, "--batch-size", recipe.batch_size, "--l2", "0",
                                 "--dropout", recipe.dropout, "--optimizer", recipe.optimizer, "--out", out], capsys)
    assert code == 0, err
    assert len(json.loads((out / "trials.json").read_text(encoding="utf-8"))["trials"]) == 1
    _same(xpnet.load(out / "best_model.npz"), trained)
    # best.toml replays the trial: `xpnet train --config` on it gives the same weights again
    code, _, err = run_cli(["train", "--config", out / "best.toml", "--out", tmp_path / "replay.npz", "--quiet"], capsys)
    assert code == 0, err
    _same(xpnet.load(tmp_path / "replay.npz"), trained)


def test_fit_with_the_recipe_equals_train(trained, cfg):
    split = prepare_split(cfg)
    net = cfg.build_net(split.n_features, split.n_classes)
    xpnet.fit(net, X=split.X_train, y=split.y_train, recipe=cfg, seed=cfg.seed)
    _same(net, trained)


def test_classifier_equals_train(trained, cfg, data_dir):
    """The estimator on the raw training rows `xpnet train` keeps (its split, before normalising)."""
    ds = load_dataset(None, data_dir=data_dir)
    X = ds.X_train.reshape(len(ds.X_train), -1)
    Xtr, ytr, _, _ = train_val_split(X, ds.y_train, cfg.val_split, seed=cfg.seed)
    clf = xpnet.Classifier(hidden_layer_sizes=(int(HIDDEN),), max_iter=int(EPOCHS), random_state=int(SEED)).fit(Xtr, ytr)
    _same(clf.net_, trained)
    Xte = ds.X_test.reshape(len(ds.X_test), -1)
    assert clf.score(Xte, ds.y_test) == float(np.mean(trained.predict(Xte) == ds.y_test))
