"""CPU vs GPU: the same xp code must give the same numbers (skipped without CuPy + CUDA)."""

import numpy as np
from conftest import gpu

import xpnet


@gpu
def test_ten_adam_steps_match_in_float64():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((640, 784))
    y = rng.integers(0, 10, 640)
    nets = {}
    for device in ("cpu", "gpu"):
        net = xpnet.MLP([784, 256, 10], device=device, dtype="float64", seed=3)
        trainer = xpnet.Trainer(net, xpnet.optim.Adam(1e-3), X, y, batch_size=64, seed=1)
        trainer.run(1)  # 10 steps of 64
        nets[device] = xpnet.to_numpy(net.flat_params)
    np.testing.assert_allclose(nets["gpu"], nets["cpu"], rtol=1e-8, atol=1e-12)


@gpu
def test_one_epoch_same_accuracy(fashion_dir):
    ds = xpnet.load_dataset("fashion-mnist")
    norm = xpnet.Normalizer().fit(ds.X_train)
    X, Xt = norm.transform(ds.X_train), norm.transform(ds.X_test)
    acc = {}
    for device in ("cpu", "gpu"):
        net = xpnet.MLP([784, 256, 10], device=device, seed=0)
        xpnet.fit(net, xpnet.optim.Adam(1e-3), X, ds.y_train, epochs=1, batch_size=128, seed=0)
        acc[device] = xpnet.evaluate(net, Xt, ds.y_test)["accuracy"]
    assert abs(acc["gpu"] - acc["cpu"]) <= 0.002


@gpu
def test_dropout_and_sgd_run_on_gpu():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 20)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = xpnet.MLP([20, 32, 2], device="gpu", dropout=0.2)
    history = xpnet.fit(net, xpnet.optim.Momentum(0.1), X, y, epochs=5, val=0.2)
    assert history["val_acc"][-1] > 0.8
