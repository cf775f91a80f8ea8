"""examples/notes_mlp.py (the course notes' network, samples as columns) against xpnet.MLP (samples as rows).

Same weights, same real images, float64: the notes' dW = dZ·Aᵀ/m and db = Σ dZ/m equal the
gradients xpnet's backprop writes into ``net.grads`` for the mean cross-entropy.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import xpnet
from conftest import REPO


@pytest.fixture(scope="module")
def notes():
    spec = importlib.util.spec_from_file_location("notes_mlp", REPO / "examples" / "notes_mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only: main() runs under __main__
    return module


@pytest.fixture
def images(shared_mnist_dir, notes):
    X, y = notes.load(shared_mnist_dir, "t10k")  # (784, 10000) columns in [0, 1]
    return X[:, :48].astype(np.float64), y[:48]


@pytest.mark.parametrize("sizes", [[784, 16, 10], [784, 16, 12, 10]])
def test_notes_gradients_equal_xpnet(notes, images, sizes):
    X, y = images
    net = xpnet.MLP(sizes, activation="relu", output="softmax", dtype="float64", seed=3)
    rng = np.random.default_rng(1)
    net.set_params([p + rng.normal(0, 0.05, p.shape) for p in (np.asarray(q) for q in net.params)])  # biases ≠ 0
    params = [(np.array(W), np.array(b).reshape(-1, 1)) for W, b in zip(net.W, net.b)]

    loss, _ = net.loss_and_grad(X.T, y)  # xpnet: samples are rows
    Zs, As = notes.forward(params, X)  # the notes: samples are columns
    grads = notes.backward(params, Zs, As, np.eye(10)[:, y])

    m = X.shape[1]
    assert float(loss) == pytest.approx(-np.mean(np.log(As[-1][y, np.arange(m)])), rel=1e-12)
    for l, (dW, db) in enumerate(grads):
        assert dW.shape == net.grads[2 * l].shape and db.shape == (net.grads[2 * l + 1].size, 1)
        np.testing.assert_allclose(dW, net.grads[2 * l], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(db[:, 0], net.grads[2 * l + 1], rtol=1e-10, atol=1e-14)
    assert np.abs(grads[0][0]).max() > 1e-4  # a real gradient, not two zero arrays agreeing


def test_notes_main_runs_on_a_slice(notes, shared_mnist_dir, capsys):
    if not (shared_mnist_dir / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("needs the MNIST training files")
    accuracy = notes.main(["--data-dir", str(shared_mnist_dir), "--hidden", "16", "--epochs", "2",
                           "--train-limit", "2000", "--lr", "0.2"])
    out = capsys.readouterr().out
    assert "epoch 2/2: train loss" in out and "test accuracy" in out
    assert 0.75 < accuracy <= 1.0
