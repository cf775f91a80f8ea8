"""CPU vs GPU: the same xp code must give the same numbers.

The eager GPU path's kernel calls are checked everywhere on the CPU emulator of
kernels/*.cu; the real CPU-vs-GPU comparisons skip without CuPy + CUDA."""

import numpy as np
import pytest
from conftest import gpu

import xpnet
from xpnet.ops import cuda, reference


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_eager_training_through_the_cuda_ops_matches_the_reference(kernel_device, request, monkeypatch, l2):
    """The model and Adam call exactly the fused ops they call on a GPU (bias + ReLU, the
    ReLU mask, softmax-CE, Adam), here on the emulated kernels: 2 epochs in float64 give the
    reference ops' weights and history."""
    if kernel_device.name == "cuda":
        pytest.skip("on a GPU, test_ten_adam_steps_match_in_float64 compares the real thing")
    launches = request.getfixturevalue("cuda_emulator").launches
    launches.clear()
    calls = []

    def gpu_ops(xp, fast=True):
        calls.append(fast)
        return cuda if fast else reference

    monkeypatch.setattr("xpnet.nn.model.get_ops", gpu_ops)
    monkeypatch.setattr("xpnet.ops.get_ops", gpu_ops)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 30))
    y = rng.integers(0, 4, 150)
    results = {}
    for fast in (True, False):
        net = xpnet.MLP([30, 24, 16, 4], dtype="float64", seed=3, fast_ops=fast)
        opt = xpnet.optim.Adam(3e-3, fast_ops=fast)
        history = xpnet.Trainer(net, opt, X, y, batch_size=32, seed=1, l2=l2).run(2)
        results[fast] = (net.flat_params.copy(), history["train_loss"], history["train_acc"])
    assert True in calls and False in calls
    step = {"gather_batch_f64", "bias_relu_forward_f64", "bias_add_f64", "softmax_xent_f64_i32", "step_metrics_f64",
            "bias_grad_f64", "relu_backward_f64", "adam_step_f64"} | ({"l2_grad_f64"} if l2 else set())
    assert step == set(launches)  # the whole step runs on kernels: nothing falls back to the reference
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(results[True][1], results[False][1], rtol=1e-12)
    assert results[True][2] == results[False][2]


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
def test_one_step_gradients_match_in_float64(fashion_dir):
    """One step's gradients on real images, CPU vs GPU in float64: the same maths to rounding.
    (Comparing accuracies after an epoch would measure Adam's chaotic trajectory, not the code.)"""
    ds = xpnet.load_dataset("fashion-mnist")
    X = xpnet.Normalizer().fit(ds.X_train[:1000]).transform(ds.X_train[:256], "float64")
    grads = {}
    for device in ("cpu", "gpu"):
        net = xpnet.MLP([784, 256, 10], device=device, dtype="float64", seed=0, label_smoothing=0.1)
        net.loss_and_grad(X, ds.y_train[:256], l2=0.01)
        grads[device] = xpnet.to_numpy(net.flat_grads)
    scale = np.abs(grads["cpu"]).max()
    np.testing.assert_allclose(grads["gpu"], grads["cpu"], rtol=1e-10, atol=1e-12 * scale)


@gpu
def test_dropout_and_sgd_run_on_gpu():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 20)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = xpnet.MLP([20, 32, 2], device="gpu", dropout=0.2)
    history = xpnet.fit(net, xpnet.optim.Momentum(0.1), X, y, epochs=5, val=0.2)
    assert history["val_acc"][-1] > 0.8
