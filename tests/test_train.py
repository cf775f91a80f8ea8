"""Training end to end: real data reaches a stated accuracy, early stopping, resume, Classifier."""

import numpy as np
import pytest

import xpnet
from xpnet.data import read_idx
from xpnet.errors import ConfigError, DivergedError


@pytest.fixture(scope="module")
def fashion_slice():
    """5,000 Fashion-MNIST training images and 2,000 test images (normalised on the train slice)."""
    from conftest import FASHION_DIR

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed")
    X = read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")[:5000]
    y = read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")[:5000].astype(np.int64)
    Xt = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:2000]
    yt = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")[:2000].astype(np.int64)
    norm = xpnet.Normalizer().fit(X)
    return norm.transform(X), y, norm.transform(Xt), yt


def test_784_64_10_learns_fashion_mnist(fashion_slice):
    X, y, Xt, yt = fashion_slice
    net = xpnet.MLP([784, 64, 10], seed=0)
    history = xpnet.fit(net, xpnet.optim.Adam(1e-3), X, y, epochs=8, batch_size=64, val=0.1)
    assert len(history) == 8
    assert history["train_loss"][-1] < history["train_loss"][0]
    scores = xpnet.evaluate(net, Xt, yt)
    # Stated target: 5k training images, 8 epochs → ≥ 80 % on 2k test images (measured ~83 %).
    assert scores["accuracy"] >= 0.80
    assert set(history.last) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "samples_per_s"}


def _toy(seed=0, n=600):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 10)).astype(np.float32)
    y = (X[:, :3] @ rng.standard_normal((3, 4))).argmax(axis=1)
    return X, y


def test_early_stopping_restores_the_best_epoch():
    X, y = _toy()
    Xv, yv = _toy(seed=1, n=200)
    yv = np.random.default_rng(2).integers(0, 4, size=200)  # unlearnable val labels: val loss rises
    net = xpnet.MLP([10, 64, 4], seed=0)
    seen = {}

    def remember(record, trainer):
        seen[record["epoch"]] = trainer.net.flat_params.copy()

    history = xpnet.fit(net, xpnet.optim.Adam(3e-3), X, y, epochs=30, val=(Xv, yv),
                        early_stopping=xpnet.EarlyStopping(patience=3), callbacks=[remember])
    assert history.stopped_early and len(history) < 30
    best = history.best_epoch
    assert history["val_loss"][best - 1] == min(history["val_loss"])
    assert len(history) == best + 3
    np.testing.assert_array_equal(net.flat_params, seen[best])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, dropout):
    X, y = _toy()

    def make():
        net = xpnet.MLP([10, 16, 4], seed=1, dropout=dropout)
        return net, xpnet.optim.Adam(1e-2)

    net_a, opt_a = make()
    xpnet.Trainer(net_a, opt_a, X, y, batch_size=32, seed=3).run(4)

    net_b, opt_b = make()
    trainer = xpnet.Trainer(net_b, opt_b, X, y, batch_size=32, seed=3)
    stop_at = {"n": 0}

    def stop_mid_epoch(record, tr):
        pass

    # Stop in the middle of epoch 3 (after 5 of its batches), as Ctrl-C would.
    original = net_b.train_step

    def counting(*args, **kwargs):
        stop_at["n"] += 1
        if stop_at["n"] == 2 * trainer.n_batches + 5:
            trainer.stop_requested = True
        return original(*args, **kwargs)

    net_b.train_step = counting
    history = trainer.run(4)
    assert history.interrupted and trainer.epoch == 2 and trainer.batch == 5
    from xpnet.io.npz import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "ck.npz", trainer)
    net_c, state, _ = load_checkpoint(tmp_path / "ck.npz")
    opt_c = xpnet.optim.Adam(1e-2)
    resumed = xpnet.Trainer(net_c, opt_c, X, y, batch_size=32, seed=3)
    resumed.load_state_dict(state)
    resumed.run(4)
    np.testing.assert_array_equal(net_c.flat_params, net_a.flat_params)
    assert len(resumed.history) == 4


def test_batch_minibatch_and_stochastic_are_one_loop():
    X, y = _toy(n=64)
    for batch_size, steps in [(64, 1), (16, 4), (1, 64)]:
        opt = xpnet.optim.SGD(0.01)
        xpnet.fit(xpnet.MLP([10, 8, 4]), opt, X, y, epochs=1, batch_size=batch_size)
        assert opt.t == steps


def test_divergence_is_reported_with_the_epoch_and_a_hint():
    X, y = _toy()
    X = X * 1e4
    net = xpnet.MLP([10, 64, 4], init="normal")
    with pytest.raises(DivergedError, match=r"loss became nan in epoch 1; try a lower learning rate \(now 1e\+06\)"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xpnet.fit(net, xpnet.optim.SGD(1e6), X, y, epochs=2)


def test_fit_argument_errors():
    X, y = _toy(n=50)
    net, opt = xpnet.MLP([10, 4]), xpnet.optim.SGD(0.1)
    with pytest.raises(ConfigError, match="early stopping needs validation data"):
        xpnet.fit(net, opt, X, y, early_stopping=2)
    with pytest.raises(ConfigError, match="batch size must be >= 1, got 0"):
        xpnet.fit(net, opt, X, y, batch_size=0)
    with pytest.raises(ConfigError, match=r"validation fraction must be in \(0, 1\), got 1.5"):
        xpnet.fit(net, opt, X, y, val=1.5)


def test_stratified_split_keeps_class_shares():
    y = np.repeat(np.arange(4), [100, 200, 300, 400])
    X = np.arange(1000, dtype=np.float32)[:, None]
    Xtr, ytr, Xv, yv = xpnet.train_val_split(X, y, 0.1, seed=0)
    assert np.bincount(yv).tolist() == [10, 20, 30, 40]
    assert len(set(Xtr[:, 0]) & set(Xv[:, 0])) == 0 and len(Xtr) + len(Xv) == 1000


def test_normalizer_uses_train_statistics_only():
    train = np.full((4, 3), 100, dtype=np.uint8)
    train[0] = 0
    norm = xpnet.Normalizer().fit(train)
    test = np.full((2, 3), 255, dtype=np.uint8)
    expected = (1.0 - norm.mean) / norm.std
    np.testing.assert_allclose(norm.transform(test), expected, rtol=1e-6)
    assert norm.mean == pytest.approx(75 / 255)


def test_classifier_sklearn_style():
    X, y = _toy(n=400)
    labels = np.array(["cat", "dog", "eel", "fox"])[y]
    clf = xpnet.Classifier(hidden_layer_sizes=(32,), max_iter=15, learning_rate_init=1e-2, batch_size=32, random_state=0)
    assert clf.fit(X, labels) is clf
    assert set(clf.predict(X)) <= set(labels)
    assert clf.predict_proba(X).shape == (400, 4)
    assert clf.score(X, labels) > 0.8
    assert clf.get_params()["hidden_layer_sizes"] == (32,)
